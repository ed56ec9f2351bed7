"""Every bound in one place: the values each numeric setting accepts, and how much untrusted input is read whole.

Settings: `RANGES` names every numeric setting of TrainConfig, its `env.*` and `agent.*` sections as `ask` and
`eval` set them too; `config.merge` checks each value it sets (presets, files, saved runs, --set, flags), so a
zero that would divide or a negative timeout is one line, not a traceback later (tests/rl/test_config.py keeps
the table complete). Input sizes: what a user hands us is refused past its limit before any work starts, with
one line naming the limit (README "Configuration" lists them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from researchrl.errors import ConfigError, UserError

MAX_QUESTION_CHARS = 8_192  # a question (`ask`, a questions file): ~2k tokens, leaving the context to the episode
MAX_ANSWERS_CHARS = 100_000  # one question's gold answers, all aliases together (the paper's dev set: up to 42k)
MAX_LINE_CHARS = 1_000_000  # one line of a JSONL input (questions, corpus, SFT token rows), refused before parsing
MAX_CONFIG_BYTES = 1_000_000  # a TOML config file (--config, a run's config.toml)


@dataclass(frozen=True)
class Range:
    """What a numeric setting accepts: at least `low` (above it when `above`), at most `high`; None is unbounded."""

    low: float | None = None
    high: float | None = None
    above: bool = False  # low itself excluded: a timeout of 0 waits for nothing

    def refuses(self, value: float) -> str | None:
        """Why `value` is out of range, or None when it is in."""
        low_ok = self.low is None or (value > self.low if self.above else value >= self.low)
        high_ok = self.high is None or value <= self.high
        if low_ok and high_ok:
            return None
        if self.low is not None and self.high is not None:
            return f"above {self.low:g} and at most {self.high:g}" if self.above else f"between {self.low:g} and {self.high:g}"
        if not low_ok:
            return f"above {self.low:g}" if self.above else f"at least {self.low:g}"
        return f"at most {self.high:g}"


COUNT, NONNEGATIVE, POSITIVE, SHARE, ANY = Range(1), Range(0), Range(0, above=True), Range(0, 1), Range()
_RETRY = {"attempts": COUNT, "base_delay": NONNEGATIVE, "max_delay": NONNEGATIVE, "jitter": SHARE, "max_retry_after": NONNEGATIVE}

RANGES: dict[str, Range] = {
    "heldout": NONNEGATIVE, "eval_questions": COUNT, "threads": COUNT, "group_size": COUNT, "questions_per_step": COUNT,
    "max_steps": COUNT, "learning_rate": NONNEGATIVE, "beta": NONNEGATIVE, "epsilon": SHARE, "micro_batch": COUNT,
    "save_steps": COUNT, "sft_examples": COUNT, "sft_epochs": POSITIVE, "sft_learning_rate": NONNEGATIVE,
    "vllm_sync_tolerance": NONNEGATIVE, "logprob_chunk": COUNT,
    "env.top_k": COUNT, "env.snippet_chars": COUNT, "env.search_timeout": POSITIVE, "env.segment_chars": COUNT,
    "env.max_segments_per_url": COUNT, "env.sandbox_faults": SHARE, "env.sandbox_seed": ANY,
    "env.fetch.connect_timeout": POSITIVE, "env.fetch.read_timeout": POSITIVE, "env.fetch.deadline": POSITIVE,
    "env.fetch.max_bytes": COUNT, "env.fetch.max_redirects": NONNEGATIVE, "env.fetch.per_host_concurrency": COUNT,
    "env.fetch.max_tracked_hosts": COUNT, "env.fetch.max_connections": COUNT, "env.search_qps": POSITIVE,
    "env.breaker_failures": COUNT, "env.breaker_cooldown": NONNEGATIVE, "env.prices": NONNEGATIVE,
    "env.step_budget_usd": NONNEGATIVE, "env.run_budget_usd": NONNEGATIVE, "env.ray_workers": COUNT,
    "env.extract_workers": NONNEGATIVE, "env.reader_max_tokens": COUNT,
    **{f"{section}.{key}": bound for section in ("env.search_retry", "env.fetch.retry") for key, bound in _RETRY.items()},
    "agent.max_turns": COUNT, "agent.max_context_tokens": COUNT, "agent.max_observation_chars": COUNT,
    "agent.sampling.temperature": NONNEGATIVE, "agent.sampling.top_p": Range(0, 1, above=True),
    "agent.sampling.max_new_tokens": COUNT, "agent.seed": ANY, "agent.reward.format_penalty": Range(high=0),
}


def check_range(name: str, value: Any) -> None:  # noqa: ANN401
    """ConfigError when the setting `name` is out of its range (None, an unset optional, always passes)."""
    bound = RANGES.get(name)
    if bound is None or value is None:
        return
    numbers = [number for _, number in value] if isinstance(value, tuple) else [value]  # env.prices: (name, USD) pairs
    for number in numbers:
        refused = bound.refuses(number)
        if refused:
            raise ConfigError(f"{name} must be {refused}, got {number}")


def check_size(what: str, size: int, limit: int, unit: str = "characters", error: type[UserError] = UserError) -> None:
    """`error` when untrusted input is past its limit; the message names the limit and where it is set."""
    if size > limit:
        raise error(f"{what} is {size:,} {unit}; the limit is {limit:,} (researchrl/bounds.py)")
