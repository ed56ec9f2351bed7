"""`EnvConfig(executor="ray")`: the same environment, its search/fetch/read calls on Ray tool workers, same episodes."""

from __future__ import annotations

import asyncio

from researchrl.environment import EnvConfig
from researchrl.web.http import FetchConfig
from tests.distributed.conftest import host
from tests.test_environment import comparable, episodes


def test_ray_executor_gives_the_same_episodes_as_local(sandbox, shared_data, monkeypatch) -> None:  # noqa: ANN001
    from researchrl.data.load import load_questions

    monkeypatch.setenv("SERPER_API_KEY", "sandbox")  # the workers get it from the session's runtime_env
    questions = load_questions(shared_data / "wiki" / "questions.jsonl")[:6]
    local = EnvConfig(search="serper", search_url=sandbox.url, web="live", fetch=FetchConfig(allow_hosts=frozenset({host(sandbox)})))
    on_ray = EnvConfig(**{**local.__dict__, "executor": "ray", "ray_workers": 2})
    here = asyncio.run(episodes(local, questions))
    remote = asyncio.run(episodes(on_ray, questions))
    assert [comparable(t) for t in remote] == [comparable(t) for t in here]
    assert any(t.tool_calls for t in remote)
