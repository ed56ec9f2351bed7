"""Rollout workers on a local Ray instance: remote episodes equal local ones, token for token, in input order."""

from __future__ import annotations

import asyncio
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from researchrl.agent.loop import AgentConfig
from researchrl.distributed.rollout import RayRolloutPool
from researchrl.environment import EnvConfig, RunningEnvironment
from researchrl.policy.base import Context
from researchrl.policy.scripted import ScriptedPolicy, last_observation
from researchrl.policy.tokenizers import ByteChatTokenizer
from researchrl.rl.expert import first_urls, tool_turn
from researchrl.sandbox.server import SandboxServer
from researchrl.types import FormatError, Question, Trajectory, Turn
from researchrl.web.http import FetchConfig
from tests.distributed.conftest import host

ray = pytest.importorskip("ray")
QUESTIONS = [
    Question("q-lilu", "If Gallu is a demon Lilu is what?", ("a spirit",)),
    Question("q-dice", "Who designed Demon Dice together with Tim Brown?", ("Lester Smith",)),
    Question("q-sona", "In which folklore is Maha Sona a demon?", ("Sinhalese folklore",)),
]
AGENT = AgentConfig(max_turns=4)
_SUMMARY = re.compile(r"'page_summary': ['\"]([^'\"]+)")


def expert_turn(context: Context) -> str:
    """Search the question, browse the top hit, answer with the start of what was read (or break the format)."""
    turn = sum(m.role == "assistant" for m in context.messages)
    observation = last_observation(context)
    if turn == 0:
        return tool_turn("Let me search.", "web_search", "query", [context.messages[1].content])
    if turn == 1 and first_urls(observation):
        return tool_turn("Let me read the top hit.", "browse_webpage", "url_list", first_urls(observation)[:1])
    summary = _SUMMARY.search(observation)
    if summary is None:
        return "nothing to go on"  # no tags: a format error ends the episode
    return f"\nIt says so.\n</think>\n<answer>{' '.join(summary.group(1).split()[:6])}</answer>"


@dataclass(frozen=True)
class Expert:
    """A picklable policy factory: the scripted expert on the byte tokenizer."""

    def __call__(self) -> ScriptedPolicy:
        return ScriptedPolicy(expert_turn, ByteChatTokenizer())


def shared_env(sandbox: SandboxServer) -> EnvConfig:
    """Every process searches and browses the same sandbox (the workers' SERPER_API_KEY comes from conftest)."""
    fetch = FetchConfig(allow_hosts=frozenset({host(sandbox)}), per_host_concurrency=64)
    return EnvConfig(search="serper", search_url=sandbox.url, fetch=fetch)


def run_locally(env: EnvConfig, questions: list[Question], indices: list[int]) -> list[Trajectory]:
    """The reference: the same episodes through RunningEnvironment in this process."""
    running = RunningEnvironment(env, "deepresearcher")
    try:
        return running.episodes(questions, Expert()(), AGENT, indices)
    finally:
        running.close()


@pytest.fixture(scope="module")
def pool(sandbox: SandboxServer) -> Iterator[RayRolloutPool]:
    """Two rollout workers over the shared sandbox."""
    rollout_pool = RayRolloutPool(Expert(), shared_env(sandbox), "deepresearcher", workers=2)
    asyncio.run(rollout_pool.start())
    yield rollout_pool
    asyncio.run(rollout_pool.aclose())
    assert ray.is_initialized(), "a pool must not shut down a Ray it did not start"


@pytest.fixture(scope="module")
def local(sandbox: SandboxServer) -> list[Trajectory]:
    """Five episodes run locally: every question, the first also as sample 1 and 2."""
    env = shared_env(sandbox)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SERPER_API_KEY", "sandbox")
        return run_locally(env, QUESTIONS + QUESTIONS[:2], [0, 0, 0, 1, 2])


def test_trajectories_pickle_cleanly(local: list[Trajectory]) -> None:
    turn = Turn("oops", [2], None, "eos", FormatError("no_answer"))
    broken = Trajectory(QUESTIONS[0], [1], [2], [1], [0.0], [turn], "format_error")
    for trajectory in [*local, broken]:
        assert pickle.loads(pickle.dumps(trajectory)) == trajectory


def test_remote_rollouts_equal_local_ones_in_input_order(pool: RayRolloutPool, local: list[Trajectory]) -> None:
    before = asyncio.run(pool.episodes_run())
    remote = asyncio.run(pool.run(QUESTIONS + QUESTIONS[:2], AGENT, [0, 0, 0, 1, 2]))
    assert remote == local
    assert [t.question.id for t in remote] == ["q-lilu", "q-dice", "q-sona", "q-lilu", "q-dice"]
    assert [c.name for c in remote[0].tool_calls] == ["web_search", "browse_webpage"]
    assert remote[0].termination == "answer" and remote[0].tool_errors == []
    assert remote[1].answer.startswith("Demon Dice"), "the answer was read off the browsed page"
    spent = [after - b for after, b in zip(asyncio.run(pool.episodes_run()), before)]
    assert spent == [3, 2], "round-robin shards, one per worker"


def test_a_killed_rollout_worker_is_replaced_and_its_shard_rerun(pool: RayRolloutPool, local: list[Trajectory]) -> None:
    doomed = pool.workers[1]
    ray.kill(doomed)
    remote = asyncio.run(pool.run(QUESTIONS + QUESTIONS[:2], AGENT, [0, 0, 0, 1, 2]))
    assert remote == local
    assert pool.replaced == 1 and pool.workers[1] is not doomed
    assert asyncio.run(pool.episodes_run())[1] == 2, "the fresh worker ran the dead one's shard"


def test_default_sandbox_environment_runs_inside_the_worker(local: list[Trajectory]) -> None:
    """EnvConfig() starts a sandbox in each process: same episodes, only the port in URLs differs."""

    def port_free(trajectories: list[Trajectory]) -> list[tuple]:
        text = lambda s: re.sub(r"127\.0\.0\.1:\d+", "HOST", s)  # noqa: E731
        return [
            (t.termination, t.reward, [text(turn.text) for turn in t.turns],
             [text(turn.observation.text) for turn in t.turns if turn.observation])
            for t in trajectories
        ]

    async def remote_run() -> list[Trajectory]:
        async with RayRolloutPool(Expert(), EnvConfig(), "deepresearcher", workers=1) as rollout_pool:
            return await rollout_pool.run(QUESTIONS[:2], AGENT, [0, 0])

    assert port_free(asyncio.run(remote_run())) == port_free(local[:2])
