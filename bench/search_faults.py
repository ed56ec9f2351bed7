"""Search blocks lost under injected faults: 1,024 concurrent trajectories (64 questions x G = 16 rollouts, two
searches each) against the sandbox with 10 % faults on search (429, 500, hang, cut body, captcha page, garbage JSON),
through the layers open_environment puts in front of a search provider (cache with single-flight, guard with its
circuit breaker, the Serper client with its retries).

    .venv/bin/python bench/search_faults.py [--trajectories 1024] [--fault-rate 0.1] [--seed 0]

Every request is logged where it leaves the client, with the fault it met in the sandbox's own names, so a query's
requests split into upstream calls: an answer ends one, `attempts` faults in a row end a failed one. A block may be
lost only behind such a failed call (its leader's retries spent; callers that had joined it fly again) or with its
rejoins spent; the bench counts, query by query, whether the lost blocks are exactly those, and checks that the
faults the client met are the faults the sandbox counted. The baseline is the same workload with the behaviour
before issue 11 (a 200 that is not JSON is final; a failed call's error goes to everyone who joined it).
Prints figures, writes bench/results/search_faults.json. Not a test (tests/web/test_search_faults.py runs it small).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from researchrl.data.load import load_questions
from researchrl.policy.vllm_server import free_port
from researchrl.sandbox.config import shared_data_dir
from researchrl.sandbox.server import spawn_sandbox
from researchrl.search.base import SearchError
from researchrl.search.serper import SerperSearch
from researchrl.tools.base import EpisodeState
from researchrl.tools.web_search import WebSearchTool
from researchrl.web.cache import MemoryStore
from researchrl.web.cached import Cached
from researchrl.web.guard import Guarded
from researchrl.web.kinds import SEARCH, normalize_query
from researchrl.web.ledger import Ledger
from researchrl.web.limits import CircuitBreaker
from researchrl.web.retry import RetryableError, RetryPolicy

HERE = Path(__file__).parent
REJOINS = 2  # flights a caller may try again behind a failed one: Cached's default, which open_environment uses
SEARCH_KINDS = ("http_429", "http_500", "timeout", "truncated", "captcha", "garbage_json")  # all that hit search
Trajectory = list[list[str]]  # turns, each a web_search call's queries
Request = tuple[str, str | None]  # (query, the fault it met, None when answered)


def workload(trajectories: int, group: int = 16, seed: int = 0) -> list[Trajectory]:
    """G rollouts per question: each searches the question, then one of four rephrasings of it (as rollouts diverge)."""
    questions = [q.question for q in load_questions(shared_data_dir() / "wiki" / "questions.jsonl")]
    rng = random.Random(seed)
    out = []
    for i in range(trajectories):
        question = questions[(i // group) % len(questions)]
        words = question.rstrip("?").split()
        rephrased = [" ".join(words[:5]), " ".join(words[-5:]), f"{question} wikipedia", f"who or what: {question}"]
        out.append([[question], [rng.choice(rephrased)]])
    return out


class Recorder(httpx.AsyncBaseTransport):
    """Sends through httpx and logs each request's query and the fault it met, named as the sandbox counts it."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=100))
        self.log: list[Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        query = json.loads(request.content)["q"]
        try:
            response = await self.inner.handle_async_request(request)
            try:
                body = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            self.log.append((query, "timeout"))
            raise
        except httpx.TransportError:
            self.log.append((query, "truncated"))  # the sandbox's only other transport fault: a body cut short
            raise
        self.log.append((query, fault_of(response.status_code, response.headers.get("content-type", ""), body)))
        return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)

    async def aclose(self) -> None:
        """Close the connections."""
        await self.inner.aclose()


def fault_of(status: int, content_type: str, body: bytes) -> str | None:
    """The injected fault a complete response shows, None for a real answer."""
    if status == 429:
        return "http_429"
    if status >= 500:
        return "http_500"
    if "html" in content_type:
        return "captcha"
    try:
        json.loads(body)
    except ValueError:
        return "garbage_json"
    return None


class OldSerper(SerperSearch):
    """The client before issue 11, for the baseline: a 200 that is not JSON was a final bad_response."""

    async def _attempt(self, *args: Any) -> Any:  # noqa: ANN401
        try:
            return await super()._attempt(*args)
        except RetryableError as err:
            if err.kind == "bad_response":
                raise SearchError(self.name, err.kind, str(err)) from None
            raise


@dataclass
class Outcome:
    """What one run of the workload lost, and every request it sent."""

    blocks: int  # query blocks the observations held
    lost: Counter[str]  # normalised query -> blocks that came back as errors
    errors: Counter[str]  # error kind -> lost blocks
    log: list[Request]  # every request, in the order answered
    upstream_calls: int  # calls the cache layer sent to the guard
    rejoined: int  # callers that flew again after a call they had joined failed
    wall_s: float


async def run(url: str, trajectories: list[Trajectory], retry: RetryPolicy, timeout: float, *,
              rejoins: int = REJOINS, breaker: bool = True, old: bool = False) -> Outcome:
    """Every trajectory at once, turn after turn, through cache -> guard -> Serper client against `url`.

    `breaker`: the guard's circuit breaker (open_environment's default, 5 failed calls in a row); without it, faults
    so frequent that it would open (and refuse whole groups on purpose) still reach the retry budget.
    """
    recorder = Recorder()
    http = httpx.AsyncClient(transport=recorder)
    client = (OldSerper if old else SerperSearch)(api_key="sandbox", base_url=url, timeout=timeout, retry=retry,
                                                  client=http)
    guarded = Guarded(SEARCH, client, breaker=CircuitBreaker() if breaker else None, ledger=Ledger(), provider="sandbox")
    cached = Cached(SEARCH, guarded, MemoryStore(), "cache", rejoins=0 if old else rejoins)
    tool = WebSearchTool(cached)

    async def trajectory(turns: Trajectory) -> list[dict[str, Any]]:
        state, blocks = EpisodeState(turns[0][0]), []
        for queries in turns:
            blocks += ast.literal_eval((await tool({"query": queries}, state)).text)
        return blocks

    started = time.perf_counter()
    try:
        blocks = [b for done in await asyncio.gather(*map(trajectory, trajectories)) for b in done]
    finally:
        await http.aclose()  # and the recorder's transport
    lost = [b for b in blocks if "error" in b]
    return Outcome(
        blocks=len(blocks), lost=Counter(normalize_query(b["search_query"]) for b in lost),
        errors=Counter(b["error"] for b in lost), log=recorder.log, upstream_calls=cached.upstream_calls,
        rejoined=cached.rejoined, wall_s=round(time.perf_counter() - started, 2),
    )


def failed_calls(log: list[Request], attempts: int) -> Counter[str]:
    """Per normalised query, the upstream calls that spent every attempt: `attempts` faults in a row.

    A query's calls never overlap (single-flight) and stop at its first answer (cached), so its requests are its
    calls one after another. A run of faults shorter than `attempts` left at the end is a call that gave up early.
    """
    failed: Counter[str] = Counter()
    streak: Counter[str] = Counter()
    for query, fault in log:
        key = normalize_query(query)
        streak[key] = 0 if fault is None else streak[key] + 1
        if streak[key] == attempts:
            failed[key] += 1
            streak[key] = 0
    early = {key: n for key, n in streak.items() if n}
    if early:
        raise ValueError(f"calls that gave up before {attempts} attempts: {early}")
    return failed


def injected(counters: dict[str, int]) -> Counter[str]:
    """The faults a sandbox's /_faults counters say it injected."""
    return Counter({kind: n for kind, n in counters.items() if kind != "requests" and n})


def figures(outcome: Outcome, counters: dict[str, int], attempts: int | None) -> dict[str, Any]:
    """A run's figures; with `attempts`, the blocks no retry within the budget could have saved: one per call that
    spent every attempt (its leader's; the callers that had joined it fly again)."""
    met = Counter(fault for _, fault in outcome.log if fault)
    answered = {normalize_query(query) for query, fault in outcome.log if fault is None}  # a query's last call
    out: dict[str, Any] = {
        "blocks": outcome.blocks, "lost_blocks": sum(outcome.lost.values()), "lost_by_kind": dict(outcome.errors),
        "requests": len(outcome.log), "faults_met": sum(met.values()), "upstream_calls": outcome.upstream_calls,
        "calls_failed": outcome.upstream_calls - len(answered), "rejoined": outcome.rejoined, "wall_s": outcome.wall_s,
        "faults_agree_with_sandbox": met == injected(counters) and len(outcome.log) == counters["requests"],
    }
    if attempts is not None:
        failed = failed_calls(outcome.log, attempts)
        out.update(unsavable_blocks=sum(failed.values()), lost_equal_unsavable_per_query=failed == outcome.lost)
    return out


def sandbox_flags(rate: float, hang_s: float) -> list[str]:
    """Faults on search only, each search kind at rate/6."""
    share = str(rate / len(SEARCH_KINDS))
    flags = ["--faults-on", "search", "--hang-s", str(hang_s)]
    for kind in SEARCH_KINDS:
        flags += [f"--rate-{kind.removeprefix('http_').replace('_', '-')}", share]
    return flags


def measure(args: argparse.Namespace, old: bool) -> dict[str, Any]:
    """One run against a fresh sandbox with the same seed (so the same fault sequence), and its figures."""
    port = free_port()
    server = spawn_sandbox(port, args.seed, *sandbox_flags(args.fault_rate, args.timeout + 1.0))
    try:
        base = f"http://127.0.0.1:{port}"
        outcome = asyncio.run(run(base, workload(args.trajectories, seed=args.seed), RetryPolicy(), args.timeout,
                                  old=old))
        counters = httpx.get(f"{base}/_faults", timeout=5).json()
    finally:
        server.terminate()
        server.wait(timeout=10)
    return figures(outcome, counters, None if old else RetryPolicy().attempts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=1024, help="concurrent trajectories (G = 16 per question)")
    parser.add_argument("--fault-rate", type=float, default=0.1, help="total fault rate on search, spread evenly")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per search request (hangs last 1 s more)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "search_faults.json")
    args = parser.parse_args()
    settings = {"trajectories": args.trajectories, "fault_rate": args.fault_rate, "timeout_s": args.timeout,
                "retry": asdict(RetryPolicy()), "rejoins": REJOINS, "seed": args.seed}
    results = {"ours": measure(args, old=False), "baseline": measure(args, old=True)}
    for name, fig in results.items():
        extra = (f"; unsavable {fig['unsavable_blocks']} (lost == unsavable per query: "
                 f"{fig['lost_equal_unsavable_per_query']})") if name == "ours" else ""
        print(f"{name:8s}: {fig['lost_blocks']} of {fig['blocks']} blocks lost {fig['lost_by_kind']}{extra}; "
              f"{fig['requests']} requests met {fig['faults_met']} faults (sandbox agrees: "
              f"{fig['faults_agree_with_sandbox']}); {fig['upstream_calls']} calls ({fig['calls_failed']} failed), "
              f"{fig['rejoined']} rejoined; "
              f"{fig['wall_s']} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**settings, **results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
