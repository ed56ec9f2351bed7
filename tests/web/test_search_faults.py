"""The 1,024-trajectory search workload under 10 % injected faults (bench/search_faults.py), at CI size: no query
block is lost that a retry within the budget could have saved.

Each run logs every request with the fault it met, checked against the sandbox's own fault counters; from that log
come the upstream calls that spent every attempt, and the lost blocks must be exactly those, query by query.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bench.search_faults import SEARCH_KINDS, failed_calls, figures, injected, run, workload
from researchrl.sandbox.config import SandboxConfig, shared_data_dir
from researchrl.sandbox.faults import RATE_FIELDS, FaultConfig
from researchrl.sandbox.server import SandboxServer
from researchrl.web.retry import RetryPolicy

if not (shared_data_dir() / "wiki" / "passages.jsonl").exists():
    pytest.skip("needs ../shared/data (or $RESEARCHRL_SHARED_DATA)", allow_module_level=True)

TRAJECTORIES = 128  # 8 questions x G = 16, two searches each
TIMEOUT = 1.0  # seconds per request (slack for a loaded CI machine); a hang fault lasts longer


def search_faults(rate: float, seed: int) -> FaultConfig:
    """Every fault kind that can hit search, at rate/6 each; nothing elsewhere."""
    rates = {RATE_FIELDS[kind]: rate / len(SEARCH_KINDS) for kind in SEARCH_KINDS}
    return FaultConfig(seed=seed, hang_s=TIMEOUT + 0.4, targets=("search",), **rates)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rate", "attempts", "rejoins", "breaker"),
    [
        pytest.param(0.1, 3, 2, True, id="10pct-as-configured"),  # the bench's faults, the default budget and guard
        # heavy: a quarter of all calls spend every attempt, so lost blocks and rejoins really happen. A rejoin budget
        # of G callers never runs out, so the only unsavable blocks are the leaders of failed calls; no breaker, which
        # at this rate opens (five failed calls in a row) and refuses whole groups on purpose
        pytest.param(0.5, 2, 16, False, id="50pct-two-attempts"),
    ],
)
async def test_no_block_is_lost_that_a_retry_within_the_budget_could_save(rate: float, attempts: int, rejoins: int,
                                                                          breaker: bool) -> None:
    retry = RetryPolicy(attempts=attempts, base_delay=0.01, max_delay=0.05, max_retry_after=0.05)
    with SandboxServer(SandboxConfig(faults=search_faults(rate, seed=11))) as sandbox:
        outcome = await run(sandbox.url, workload(TRAJECTORIES), retry, TIMEOUT, rejoins=rejoins, breaker=breaker)
        counters = sandbox.faults
    met = Counter(fault for _, fault in outcome.log if fault)
    assert met == injected(counters) and len(outcome.log) == counters["requests"]  # the sandbox's own count
    assert met, "faults were injected"
    unsavable = failed_calls(outcome.log, attempts)  # calls whose every attempt met a fault
    assert outcome.lost == unsavable  # query by query: every lost block is a leader of such a call, and only those
    assert outcome.blocks == 2 * TRAJECTORIES and set(outcome.errors) <= {f"search_{k}" for k in (
        "http_429", "http_500", "timeout", "network", "bad_response")}
    if rate > 0.1:
        assert sum(unsavable.values()) > 0 and outcome.rejoined > sum(unsavable.values())  # joined callers flew again


async def test_the_check_fails_on_the_behaviour_before_issue_11() -> None:
    """The old client ended a call at a captcha or garbage 200 after one attempt, and a failed call's error went to
    every caller that had joined it: both show, on the same workload, as blocks lost that a retry could have saved."""
    retry = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05, max_retry_after=0.05)
    with SandboxServer(SandboxConfig(faults=search_faults(0.5, seed=11))) as sandbox:
        outcome = await run(sandbox.url, workload(TRAJECTORIES), retry, TIMEOUT, breaker=False, old=True)
        seen = figures(outcome, sandbox.faults, None)
    with pytest.raises(ValueError, match="gave up before 2 attempts"):
        failed_calls(outcome.log, 2)
    assert seen["faults_agree_with_sandbox"] and seen["lost_blocks"] > seen["calls_failed"]  # one failure, many lost
