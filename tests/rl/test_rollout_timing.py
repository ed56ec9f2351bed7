"""Where a rollout's seconds go: interval unions on hand-made intervals, then a real rollout's time/ metrics."""

from __future__ import annotations

import asyncio
import ast
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from researchrl.agent.loop import AgentConfig
from researchrl.data.load import load_questions
from researchrl.environment import EnvConfig, RunningEnvironment
from researchrl.policy.base import Context, Sample, Sampling
from researchrl.policy.scripted import ScriptedPolicy, last_observation
from researchrl.policy.tokenizers import ByteChatTokenizer
from researchrl.rl.rollout import Rollout, Share
from researchrl.rl.timing import PhaseClock, covered, overlap

TIME_KEYS = ("time/rollout_s", "time/generation_s", "time/tools_s", "time/tools_overlap_s", "time/other_s",
             "time/tool/web_search_s", "time/tool/browse_webpage_s")
THINK_S = 0.05  # each scripted turn "thinks" this long


# ---- interval arithmetic ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("intervals", "seconds"), [
    ([], 0.0),
    ([(0.0, 1.0), (2.0, 3.0)], 2.0),  # disjoint
    ([(0.0, 2.0), (1.0, 3.0)], 3.0),  # overlapping
    ([(0.0, 5.0), (1.0, 2.0), (3.0, 4.0)], 5.0),  # nested
    ([(0.0, 1.0), (1.0, 2.0)], 2.0),  # touching
    ([(4.0, 6.0), (0.0, 1.0), (0.5, 1.5), (5.0, 5.5)], 3.5),  # unsorted, mixed
    ([(1.0, 1.0), (1.0, 1.0)], 0.0),  # instantaneous
])
def test_covered_counts_each_second_once(intervals: list[tuple[float, float]], seconds: float) -> None:
    assert covered(intervals) == pytest.approx(seconds)


@pytest.mark.parametrize(("a", "b", "both"), [
    ([(0.0, 1.0)], [(2.0, 3.0)], 0.0),  # disjoint
    ([(0.0, 2.0)], [(1.0, 3.0)], 1.0),  # overlapping
    ([(0.0, 5.0)], [(1.0, 2.0), (3.0, 4.0)], 2.0),  # nested
    ([(0.0, 2.0), (1.0, 3.0)], [(2.5, 4.0), (2.5, 3.5)], 0.5),  # overlaps inside each side are not counted twice
    ([], [(0.0, 1.0)], 0.0),
])
def test_overlap_is_the_time_both_were_in_flight(a: list, b: list, both: float) -> None:
    assert overlap(a, b) == pytest.approx(both)
    assert overlap(b, a) == pytest.approx(both)


def test_phase_clock_metrics_from_hand_made_intervals() -> None:
    clock = PhaseClock()
    clock.generation += [(0.0, 2.0), (1.0, 3.0), (6.0, 7.0)]  # 4 s in flight
    clock.tools["web_search"] += [(2.0, 4.0)]  # 1 s of it under generation
    clock.tools["browse_webpage"] += [(3.5, 5.0), (4.0, 4.5)]  # nested inside the first; 0.5 s beside a search
    metrics = clock.metrics(10.0, ["web_search", "browse_webpage"])
    assert metrics == pytest.approx({
        "time/rollout_s": 10.0, "time/generation_s": 4.0, "time/tools_s": 3.0, "time/tools_overlap_s": 1.0,
        "time/other_s": 4.0, "time/tool/web_search_s": 2.0, "time/tool/browse_webpage_s": 1.5,
    })


def test_the_step_reports_the_slowest_process_breakdown() -> None:
    ledger = SimpleNamespace(metrics=dict)
    rollout = Rollout([], SimpleNamespace(tools=SimpleNamespace(ledger=ledger)), AgentConfig())
    records = [{"tool_calls": [], "tool_errors": [], "sampled_tokens": 1}]
    fast = Share(records, 1.0, {}, "{}", False, {"time/rollout_s": 1.0, "time/generation_s": 0.5})
    slow = Share(records, 3.0, {}, "{}", False, {"time/rollout_s": 3.0, "time/generation_s": 2.0})
    rollout._report([fast, slow])
    assert rollout.last_stats["time/rollout_s"] == 3.0 and rollout.last_stats["time/generation_s"] == 2.0


# ---- a real rollout ---------------------------------------------------------------------------------------------

def _turn(name: str, key: str, values: list[str]) -> str:
    return f"next step</think>\n<tool_call>\n{json.dumps({'name': name, 'arguments': {key: values}})}\n</tool_call>"


def _expert(context: Context) -> str:
    """Search the question, browse the first hit, answer."""
    turns = sum(m.role == "assistant" for m in context.messages)
    if turns == 0:
        return _turn("web_search", "query", [context.messages[1].content])
    if turns == 1:
        body = last_observation(context).removeprefix("<tool_response>\n").removesuffix("\n</tool_response>")
        hits = [h for block in ast.literal_eval(body) for h in block["web_page_info_list"]]
        return _turn("browse_webpage", "url_list", [hits[0]["url"]] if hits else ["http://127.0.0.1:1/none"])
    return "I have read enough.</think>\n<answer>no idea</answer>"


class ThinkingPolicy(ScriptedPolicy):
    """A scripted policy whose every turn takes THINK_S seconds of wall time, as a model's would."""

    async def generate(self, context: Context, sampling: Sampling) -> Sample:
        await asyncio.sleep(THINK_S)
        return await super().generate(context, sampling)


@pytest.fixture(scope="module")
def env() -> Iterator[RunningEnvironment]:
    running = RunningEnvironment(EnvConfig(top_k=3, snippet_chars=120), "deepresearcher")
    yield running
    running.close()


def test_a_rollout_reports_where_its_seconds_went(env: RunningEnvironment, shared_data: Path, tmp_path: Path) -> None:
    questions = load_questions(shared_data / "wiki" / "questions.jsonl")[:3]
    rollout = Rollout(questions, env, AgentConfig(max_turns=4), log_path=tmp_path / "trajectories.jsonl")
    prompts = [q.question for q in questions for _ in range(2)]  # groups of two
    policy = ThinkingPolicy(_expert, ByteChatTokenizer())
    out = rollout.run(prompts, 1, contextlib.nullcontext(policy))
    assert out["tool_calls"] == [2] * len(prompts)  # every episode searched, browsed and answered
    stats = rollout.last_stats
    assert set(TIME_KEYS) <= stats.keys()
    t = {key: stats[key] for key in TIME_KEYS}
    assert t["time/rollout_s"] == rollout.last_seconds
    # three turns per episode, one after another: at least 3 x THINK_S with a generate call in flight
    assert 3 * THINK_S <= t["time/generation_s"] <= t["time/rollout_s"]
    assert 0 < t["time/tool/web_search_s"] <= t["time/tools_s"] and 0 < t["time/tool/browse_webpage_s"] <= t["time/tools_s"]
    assert 0 <= t["time/tools_overlap_s"] <= min(t["time/generation_s"], t["time/tools_s"])
    busy = t["time/generation_s"] + t["time/tools_s"] - t["time/tools_overlap_s"]
    assert busy <= t["time/rollout_s"] + 1e-6
    assert t["time/other_s"] == pytest.approx(t["time/rollout_s"] - busy, abs=1e-9)
    assert len((tmp_path / "trajectories.jsonl").read_text().splitlines()) == len(prompts)
    assert stats["behaviour/queries"] == 1.0 and stats["behaviour/searches_after_browse"] == 0.0  # eval.behaviour's


def test_curves_png_gets_a_phase_panel_when_steps_are_timed(tmp_path: Path) -> None:
    from PIL import Image

    from researchrl.rl.plot import plot_run

    rows = [{"step": s, "rewards/deepresearcher_reward/mean": 0.1 * s, "time/rollout_s": 3.0, "time/generation_s": 2.0,
             "time/tools_s": 1.5, "time/tools_overlap_s": 0.5, "seconds/update": 4.0} for s in (1, 2)]
    timed, plain = tmp_path / "timed.jsonl", tmp_path / "plain.jsonl"
    timed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain.write_text("".join(json.dumps({k: v for k, v in r.items() if "/" not in k or k.startswith("rewards")}) + "\n" for r in rows))
    widths = [Image.open(plot_run(m, tmp_path / f"{m.stem}.png")).size[0] for m in (timed, plain)]
    assert widths[0] > widths[1]  # four panels, not three
    behaved = tmp_path / "behaved.jsonl"
    behaved.write_text("".join(json.dumps({**r, "behaviour/bridge_rate": 0.5}) + "\n" for r in rows))
    assert Image.open(plot_run(behaved, tmp_path / "behaved.png")).size[0] > widths[0]  # and a behaviour panel
