"""GuardedStore: a failing backend costs hits, not calls; one warning per outage; the backend is used again after a
cooldown; a real Redis killed under an environment's episodes (and started again) does not end them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import pytest

from researchrl.agent.loop import AgentConfig, run_episode
from researchrl.data.load import load_questions
from researchrl.environment import EnvConfig, open_environment
from researchrl.policy.scripted import ScriptedPolicy
from researchrl.policy.tokenizers import ByteChatTokenizer
from researchrl.tools.base import Toolset
from researchrl.types import Trajectory
from researchrl.web.cache import MemoryStore, StoreError
from researchrl.web.ledger import Ledger
from researchrl.web.redis_store import RedisStore
from researchrl.web.store_guard import GuardedStore
from tests.agent.test_episode_sandbox import expert
from tests.redis_server import RedisServer


class Flaky(MemoryStore):
    """A MemoryStore whose operations raise StoreError while `broken`; `sent` counts the operations that reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False
        self.sent = 0

    def _reach(self) -> None:
        self.sent += 1
        if self.broken:
            raise StoreError("flaky store: down")

    async def get(self, ns: str, key: str) -> bytes | None:
        self._reach()
        return await super().get(ns, key)

    async def put(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        self._reach()
        await super().put(ns, key, value, ttl)

    async def take(self, bucket: str, rate: float, burst: float) -> float:
        self._reach()
        return await super().take(bucket, rate, burst)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "researchrl"]


async def test_a_failing_backend_is_a_miss_a_skipped_write_and_a_local_bucket(caplog: pytest.LogCaptureFixture) -> None:
    backend, clock, ledger = Flaky(), Clock(), Ledger()
    store = GuardedStore(backend, ledger, cooldown=2.0, rng=lambda: 0.5, clock=clock)  # rng 0.5: no jitter
    await store.put("ns", "k", b"v", None)
    assert await store.get("ns", "k") == b"v" and not store.down

    backend.broken = True
    with caplog.at_level(logging.WARNING, logger="researchrl"):
        assert await store.get("ns", "k") is None  # sent, failed: a miss
        await store.put("ns", "k2", b"w", None)  # skipped: the backend is cooling down
        assert await store.take("bucket", 1.0, 2.0) == 0.0  # a full bucket of this process
        assert await store.take("bucket", 1.0, 2.0) == 0.0
        assert await store.take("bucket", 1.0, 2.0) == pytest.approx(1.0, abs=0.01)  # the local bucket does limit
        assert (backend.sent, store.errors, store.skipped, store.outages) == (3, 1, 4, 1)
        assert store.down and store.retry_in == pytest.approx(2.0)
        metrics = ledger.metrics()
        assert (metrics["web/store_errors"], metrics["web/store_skipped"]) == (1.0, 4.0)

        clock.now += 2.0  # the trial: still broken, so the next cooldown is twice as long
        assert await store.get("ns", "k") is None
        assert (backend.sent, store.errors, store.retry_in) == (4, 2, pytest.approx(4.0))
        clock.now += 3.9
        assert await store.get("ns", "k") is None and backend.sent == 4
        assert len(warnings(caplog)) == 1, "one line per outage, not one per call"
        assert "going on without it" in warnings(caplog)[0] and "flaky store: down" in warnings(caplog)[0]

        clock.now += 0.1
        backend.broken = False
        assert await store.get("ns", "k") == b"v"  # the trial succeeds: the backend is back
        assert not store.down
        await store.put("ns", "k2", b"w", None)
        assert await backend.get("ns", "k2") == b"w", "writes reach the backend again"
    assert "is back; while it was down 2 operations failed and 5 were skipped" in warnings(caplog)[1]
    assert len(warnings(caplog)) == 2


@pytest.mark.parametrize(("draw", "expected"), [(0.0, [0.75, 1.5, 3.0, 3.75, 3.75]), (1.0, [1.25, 2.5, 5.0, 6.25, 6.25])])
async def test_cooldowns_double_after_each_failed_trial_up_to_a_bound_with_jitter(draw: float, expected: list[float]
                                                                                  ) -> None:
    backend, clock = Flaky(), Clock()
    backend.broken = True
    store = GuardedStore(backend, cooldown=1.0, max_cooldown=5.0, jitter=0.25, rng=lambda: draw, clock=clock)
    seen = []
    for _ in expected:
        await store.get("ns", "k")
        seen.append(store.retry_in)
        clock.now += store.retry_in
    assert seen == pytest.approx(expected)
    assert backend.sent == len(expected), "one trial per cooldown"


async def test_a_cancelled_trial_lets_the_next_call_try() -> None:
    backend, clock = Flaky(), Clock()
    backend.broken = True
    store = GuardedStore(backend, clock=clock)
    await store.get("ns", "k")
    clock.now += store.retry_in
    backend.broken = False
    hang = asyncio.Event()
    backend.get = lambda ns, key: hang.wait()  # type: ignore[method-assign]
    trial = asyncio.ensure_future(store.get("ns", "k"))
    await asyncio.sleep(0)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    backend.get = Flaky.get.__get__(backend)  # type: ignore[method-assign]
    await store.get("ns", "k")
    assert not store.down, "the cancelled trial did not keep the circuit waiting for its verdict"


async def test_a_killed_redis_is_a_miss_then_is_used_again_once_restarted() -> None:
    server = RedisServer().start()
    store = GuardedStore(RedisStore(server.url, timeout=1.0), cooldown=0.2)
    try:
        await store.put("ns", "k", b"v", None)
        assert await store.get("ns", "k") == b"v"
        server.kill()
        assert await store.get("ns", "k") is None
        await store.put("ns", "k2", b"w", None)
        assert await store.take("bucket", 10.0, 1.0) == 0.0
        assert store.down and store.errors == 1 and store.skipped == 2

        server.start()  # same port, empty: a restarted server
        await asyncio.sleep(store.retry_in + 0.01)
        await store.put("ns", "k3", b"x", None)  # the trial
        assert not store.down
        assert await store.backend.get("ns", "k3") == b"x", "the restarted server holds new writes"
        assert await store.get("ns", "k") is None, "what the killed server held is gone: a miss"
        assert store.errors == 1 and store.outages == 1
    finally:
        await store.aclose()
        server.stop()


async def test_pooled_connections_reach_a_restarted_redis_again() -> None:
    """Every pooled connection is stale after a restart; each must reconnect (the client's retry), not fail."""
    server = RedisServer().start()
    store = RedisStore(server.url, timeout=1.0)
    try:
        await asyncio.gather(*(store.get("ns", str(i)) for i in range(20)))  # 20 connections in the pool
        server.kill()
        server.start()
        assert await asyncio.gather(*(store.get("ns", str(i)) for i in range(20))) == [None] * 20
    finally:
        await store.aclose()
        server.stop()


def test_episodes_go_on_when_the_redis_cache_dies_and_count_its_errors(shared_data) -> None:  # noqa: ANN001
    questions = load_questions(shared_data / "wiki" / "questions.jsonl")[:6]
    server = RedisServer().start()

    def play(tools: Toolset, indexes: range) -> Awaitable[list[Trajectory]]:
        policy = [ScriptedPolicy(expert(questions[i].answers[0]), ByteChatTokenizer()) for i in indexes]
        return asyncio.gather(*(run_episode(questions[i], p, tools, AgentConfig()) for i, p in zip(indexes, policy)))

    async def run() -> tuple[list[str], dict[str, float]]:
        async with open_environment(EnvConfig(cache=server.url)) as tools:
            first = await play(tools, range(3))
            server.kill()
            rest = await play(tools, range(3, 6))
            return [t.termination for t in first + rest], tools.ledger.metrics()

    try:
        terminations, metrics = asyncio.run(run())
    finally:
        server.stop()
    assert terminations == ["answer"] * 6
    assert metrics["web/store_errors"] >= 1 and metrics["web/store_errors"] + metrics["web/store_skipped"] >= 6


def test_a_recording_whose_redis_dies_stops_with_the_store_error(shared_data) -> None:  # noqa: ANN001
    question = load_questions(shared_data / "wiki" / "questions.jsonl")[0]
    server = RedisServer().start()

    async def run() -> None:
        async with open_environment(EnvConfig(web="record", cache=server.url)) as tools:
            server.kill()
            policy = ScriptedPolicy(expert(question.answers[0]), ByteChatTokenizer())
            await run_episode(question, policy, tools, AgentConfig())

    try:
        with pytest.raises(StoreError):
            asyncio.run(run())
    finally:
        server.stop()
