"""The environment's web layers working together: record/replay offline, cache hits in the ledger, a shared Redis
cache, step budgets — all with whole scripted episodes over real HTTP against the sandbox."""

from __future__ import annotations

import asyncio
import dataclasses
import re

import httpx
import pytest

from researchrl.agent.loop import AgentConfig, run_episode
from researchrl.data.load import load_questions
from researchrl.environment import EnvConfig, open_environment
from researchrl.errors import ConfigError
from researchrl.policy.scripted import ScriptedPolicy
from researchrl.policy.tokenizers import ByteChatTokenizer
from researchrl.records import trajectory_record
from researchrl.tools.base import Toolset
from researchrl.sandbox.server import SandboxServer
from researchrl.types import Question, Trajectory
from researchrl.web.cached import ReplayMiss
from researchrl.web.http import FetchConfig
from researchrl.web.retry import RetryPolicy
from tests.agent.test_episode_sandbox import expert

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05, max_retry_after=0.05)


@pytest.fixture(scope="module")
def questions(shared_data) -> list[Question]:  # noqa: ANN001
    return load_questions(shared_data / "wiki" / "questions.jsonl")[:8]


async def episodes(env: EnvConfig, questions: list[Question]) -> list[Trajectory]:
    """The scripted expert (search the question, browse the first hit, answer the gold) on every question."""
    async with open_environment(env) as tools:
        return list(await asyncio.gather(*(
            run_episode(q, ScriptedPolicy(expert(q.answers[0]), ByteChatTokenizer()), tools, AgentConfig()) for q in questions
        )))


def comparable(trajectory: Trajectory) -> tuple:
    """Everything a trainer sees of an episode: token ids, mask, every turn and observation, the reward."""
    return (trajectory.prompt_ids, trajectory.completion_ids, trajectory.mask, trajectory_record(trajectory))


def test_a_recorded_run_replays_offline_to_identical_trajectories(tmp_path, questions, monkeypatch) -> None:  # noqa: ANN001
    recording = str(tmp_path / "web.sqlite")
    with SandboxServer() as reader_server:  # the sandbox's OpenAI-compatible reader stands in for the paper's qwen-plus
        recorded_env = EnvConfig(
            web="record", cache=recording, sandbox_faults=0.5, sandbox_seed=3, search_timeout=0.5, search_retry=FAST,
            fetch=FetchConfig(connect_timeout=0.5, read_timeout=0.5, deadline=3.0, retry=FAST),
            reader="llm", reader_url=f"{reader_server.url}/v1", reader_model="sandbox-reader",
        )
        recorded = asyncio.run(episodes(recorded_env, questions))
    errors = [e for t in recorded for e in t.tool_errors]
    assert errors, "the recording must hold injected faults too"
    assert any(t.reward.reward == 1.0 for t in recorded)

    # the network path is gone: no sandbox may start, and any HTTP request fails the test
    def no_network(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("replay touched the network")

    monkeypatch.setattr("researchrl.environment.start_sandbox", no_network)
    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", no_network)
    replay_env = dataclasses.replace(recorded_env, web="replay")
    replayed = asyncio.run(episodes(replay_env, questions))
    assert [comparable(t) for t in replayed] == [comparable(t) for t in recorded]


def test_replay_fails_loudly_on_a_miss_naming_the_key(tmp_path, questions) -> None:  # noqa: ANN001
    recording = str(tmp_path / "web.sqlite")
    asyncio.run(episodes(EnvConfig(web="record", cache=recording), questions[:1]))
    key = rf'search sandbox@http://127\.0\.0\.1:\d+ "{re.escape(questions[1].question.lower())}"'  # the recorded sandbox
    with pytest.raises(ReplayMiss, match=key):
        asyncio.run(episodes(EnvConfig(web="replay", cache=recording), questions[1:2]))
    with pytest.raises(ReplayMiss, match="the sandbox's address"):  # a recording of no sandbox run
        asyncio.run(episodes(EnvConfig(web="replay", cache=str(tmp_path / "empty.sqlite")), questions[:1]))


def test_the_llm_reader_with_no_url_offline_is_the_in_process_sandbox_reader(questions) -> None:  # noqa: ANN001
    """`--set env.reader=llm` alone (as `researchrl train` takes it): the sandbox's own reader reads every page."""
    env = EnvConfig(reader="llm")
    assert env.sandbox_reader and env.reader_name == "sandbox-reader"

    async def run() -> tuple[list[Trajectory], dict[str, float]]:
        async with open_environment(env) as tools:
            done = await asyncio.gather(*(
                run_episode(q, ScriptedPolicy(expert(q.answers[0]), ByteChatTokenizer()), tools, AgentConfig())
                for q in questions[:3]
            ))
            return list(done), tools.ledger.metrics()

    trajectories, spend = asyncio.run(run())
    assert all("browse_webpage" in [c.name for c in t.tool_calls] for t in trajectories)
    assert spend["web/calls/read/reader:sandbox-reader"] >= 3
    with pytest.raises(ConfigError, match="reader llm needs a reader URL"):
        asyncio.run(episodes(EnvConfig(reader="llm", search="searxng", search_url="http://127.0.0.1:9", web="live"), []))


def test_replay_and_record_need_a_cache_file() -> None:
    with pytest.raises(ConfigError, match="web mode replay needs a cache file"):
        asyncio.run(episodes(EnvConfig(web="replay"), []))


def test_repeated_episodes_are_served_by_the_cache_and_counted_in_the_ledger(questions) -> None:  # noqa: ANN001
    async def twice() -> tuple[dict[str, float], dict[str, float]]:
        async with open_environment(EnvConfig()) as tools:
            for _ in range(2):
                await asyncio.gather(*(
                    run_episode(q, ScriptedPolicy(expert(q.answers[0]), ByteChatTokenizer()), tools, AgentConfig())
                    for q in questions
                ))
                if _ == 0:
                    first = tools.ledger.metrics()
            return first, tools.ledger.metrics()

    first, second = asyncio.run(twice())
    assert first["web/calls/search/sandbox"] == len(questions)
    assert second["web/calls/search/sandbox"] == len(questions), "the second pass made no new search"
    assert second["web/hits/search/sandbox"] == len(questions)
    assert second["web/calls/page/fetch"] == first["web/calls/page/fetch"]
    assert second["web/cache_hit_rate"] > first["web/cache_hit_rate"]


def test_a_redis_cache_is_shared_by_separate_environments(redis_url, questions, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("SERPER_API_KEY", "sandbox")  # one search endpoint both environments use: a sandbox speaking Serper
    server = SandboxServer().start()
    fetch = FetchConfig(allow_hosts=frozenset({f"{server.host}:{server.port}"}))
    env = EnvConfig(search="serper", search_url=server.url, fetch=fetch, cache=redis_url)

    async def searches(tag: str) -> dict[str, float]:
        async with open_environment(env) as tools:
            await asyncio.gather(*(
                run_episode(q, ScriptedPolicy(expert(q.answers[0]), ByteChatTokenizer()), tools, AgentConfig())
                for q in questions[:4]
            ))
            return tools.ledger.metrics()

    try:
        asyncio.run(searches("first"))
        second = asyncio.run(searches("second"))  # a new environment: new clients, new process-local state
    finally:
        server.stop()
    assert second.get("web/calls/search/serper", 0) == 0
    assert second["web/hits/search/serper"] == 4


def test_two_sandboxes_sharing_one_cache_file_each_search_their_own(tmp_path, questions) -> None:  # noqa: ANN001
    """Two evals on one SQLite file, the second starting once the first has cached its searches: each sandbox (same
    provider name, its own port) answers its own, so every hit points at pages the eval may browse (else ssrf_refused)."""
    env = EnvConfig(cache=str(tmp_path / "web.sqlite"))

    async def evaluate(tools: Toolset) -> tuple[str, list[Trajectory], dict[str, float]]:
        done = await asyncio.gather(*(
            run_episode(q, ScriptedPolicy(expert(q.answers[0]), ByteChatTokenizer()), tools, AgentConfig())
            for q in questions[:4]
        ))
        sandbox = tools.tools["web_search"].backend.cache_id.removeprefix("sandbox@")  # type: ignore[attr-defined]
        return sandbox, list(done), tools.ledger.metrics()

    async def one_after_the_other() -> list[tuple[str, list[Trajectory], dict[str, float]]]:
        async with open_environment(env) as first:  # still open: the second sandbox gets another port
            done = [await evaluate(first)]
            async with open_environment(env) as second:
                return [*done, await evaluate(second)]

    runs = asyncio.run(one_after_the_other())
    assert runs[0][0] != runs[1][0]
    for sandbox, trajectories, spend in runs:
        assert spend["web/calls/search/sandbox"] == 4  # nothing answered from the other's entries
        calls = [c for t in trajectories for c in t.tool_calls if c.name == "browse_webpage"]
        browsed = [url for c in calls for url in c.arguments["url_list"]]
        assert len(browsed) == 4 and all(url.startswith(sandbox + "/wiki/") for url in browsed)
        assert [e for t in trajectories for e in t.tool_errors] == []


def test_a_step_budget_answers_with_budget_observations_and_episodes_finish(questions) -> None:  # noqa: ANN001
    env = EnvConfig(web="live", prices=(("sandbox", 0.01),), step_budget_usd=0.03)
    trajectories = asyncio.run(episodes(env, questions))
    assert all(t.termination == "answer" for t in trajectories)
    refused = [t for t in trajectories if "search_budget_exhausted" in t.tool_errors]
    assert len(refused) == len(questions) - 3, "three searches fit in $0.03, every later one is refused"
    observation = next(turn.observation.text for t in refused for turn in t.turns if turn.observation)
    assert "budget_exhausted" in observation


@pytest.mark.parametrize("url", ["http://[truncated]/wiki/Lilu", "http://[::1/x", "https://exa mple.com/"])
def test_a_url_no_parser_accepts_is_an_observation_not_a_crash(url: str) -> None:
    """Found in a real run: the model copied '…[truncated]' into a URL, and the breaker's host lookup raised."""
    from researchrl.tools.base import EpisodeState
    from researchrl.types import ToolCall

    async def browse() -> str:
        async with open_environment(EnvConfig()) as tools:
            return (await tools.call(ToolCall("browse_webpage", {"url_list": [url]}), EpisodeState("q"))).text

    observation = asyncio.run(browse())
    assert "'error':" in observation and "'information'" not in observation.replace("'information': []", "")
