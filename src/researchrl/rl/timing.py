"""Where a rollout's seconds go: wall time with a generate call in flight, with a tool call in flight, and both.

Episodes run concurrently, so summing each call's seconds would count the same second many times. Instead every
call's (start, end) is kept and the union of the intervals is measured: `generation_s` is the wall time during
which at least one `generate` was in flight, `tools_s` the same for tool calls, `tools_overlap_s` the time both
were. `generation_s + tools_s - tools_overlap_s` is the busy time, never more than the rollout's wall time; the
rest (`other_s`) is rendering, tokenizing, scoring and scheduling. `tool/<name>_s` is the union per tool (two
tools in flight at once count for each, so these may add up to more than `tools_s`).

The wrappers change neither protocol: `TimedPolicy` is a Policy and `TimedToolset` a Toolset over the same tools
and ledger; both record on the event loop that runs the episodes.
"""

from __future__ import annotations

import time
from collections import defaultdict

from researchrl.policy.base import Context, Policy, Sample, Sampling
from researchrl.tools.base import EpisodeState, Toolset
from researchrl.types import Observation, ToolCall

Interval = tuple[float, float]  # (start, end) in time.perf_counter seconds


def covered(intervals: list[Interval]) -> float:
    """Seconds covered by the union of `intervals` (overlapping and nested ones counted once)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def overlap(a: list[Interval], b: list[Interval]) -> float:
    """Seconds covered by both unions: |A| + |B| - |A ∪ B|."""
    return covered(a) + covered(b) - covered(a + b)


class PhaseClock:
    """Intervals of generate calls and of tool calls (by tool) during one rollout."""

    def __init__(self) -> None:
        self.generation: list[Interval] = []
        self.tools: dict[str, list[Interval]] = defaultdict(list)

    def metrics(self, rollout_s: float, tool_names: list[str]) -> dict[str, float]:
        """The `time/...` step metrics of a rollout that took `rollout_s` seconds; one key per tool in `tool_names`."""
        calls = [span for spans in self.tools.values() for span in spans]
        generation, tools, both = covered(self.generation), covered(calls), overlap(self.generation, calls)
        out = {
            "time/rollout_s": rollout_s,
            "time/generation_s": generation,
            "time/tools_s": tools,
            "time/tools_overlap_s": both,
            "time/other_s": max(0.0, rollout_s - (generation + tools - both)),
        }
        out.update({f"time/tool/{name}_s": covered(self.tools.get(name, [])) for name in tool_names})
        return out


class TimedPolicy:
    """A Policy that records the interval of every `generate` call of `inner` on `clock`."""

    def __init__(self, inner: Policy, clock: PhaseClock):
        self.inner = inner
        self.clock = clock
        self.tokenizer = inner.tokenizer

    async def generate(self, context: Context, sampling: Sampling) -> Sample:
        """`inner.generate`, timed (a call that raises is timed too)."""
        started = time.perf_counter()
        try:
            return await self.inner.generate(context, sampling)
        finally:
            self.clock.generation.append((started, time.perf_counter()))

    async def aclose(self) -> None:
        """Close `inner`."""
        await self.inner.aclose()


class TimedToolset(Toolset):
    """The tools and ledger of `inner`; every call's interval is recorded on `clock` under the called name."""

    def __init__(self, inner: Toolset, clock: PhaseClock):
        super().__init__(list(inner.tools.values()), ledger=inner.ledger)
        self.clock = clock

    async def call(self, call: ToolCall, state: EpisodeState) -> Observation:
        """`Toolset.call`, timed."""
        started = time.perf_counter()
        try:
            return await super().call(call, state)
        finally:
            self.clock.tools[call.name].append((started, time.perf_counter()))
