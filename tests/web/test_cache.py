"""Stores (memory, SQLite, a real Redis) under the same tests; SQLite across OS processes; SingleFlight semantics."""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from researchrl.web.cache import MemoryStore, SingleFlight, Store, StoreError, StoreStats, open_store
from researchrl.web.redis_store import RedisStore
from researchrl.web.sqlite_store import SQLiteStore

MakeStore = Callable[..., Store]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """A factory for fresh, empty stores of one kind with the given bounds; all closed after the test."""
    opened: list[Store] = []
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    def make(max_entries: int = 1000, max_bytes: int = 10**8) -> Store:
        if request.param == "memory":
            store: Store = MemoryStore(max_entries=max_entries, max_bytes=max_bytes)
        elif request.param == "sqlite":
            store = SQLiteStore(tmp_path / f"{uuid.uuid4().hex}.db", max_entries=max_entries, max_bytes=max_bytes)
        else:
            prefix = f"test-{uuid.uuid4().hex}:"
            store = RedisStore(redis_url, max_entries=max_entries, max_bytes=max_bytes, prefix=prefix)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.aclose()


async def test_get_put_overwrite_and_namespaces(make_store: MakeStore) -> None:
    store = make_store()
    assert await store.get("ns", "k") is None
    big = bytes(range(256)) * 4096  # 1 MiB with every byte value, NULs included
    await store.put("ns", "k", big, None)
    await store.put("other", "k", b"second namespace", None)
    assert await store.get("ns", "k") == big
    assert await store.get("other", "k") == b"second namespace"
    await store.put("ns", "k", b"replaced", 60)
    assert await store.get("ns", "k") == b"replaced"
    assert await store.stats() == StoreStats(entries=2, bytes=len(b"replaced") + len(b"second namespace"))


async def test_entries_expire_and_are_purged_when_read(make_store: MakeStore) -> None:
    store = make_store()
    await store.put("ns", "short", b"12345", 0.2)
    await store.put("ns", "forever", b"ok", None)
    assert await store.get("ns", "short") == b"12345"
    await asyncio.sleep(0.35)
    assert await store.get("ns", "short") is None
    assert await store.get("ns", "forever") == b"ok"
    assert await store.stats() == StoreStats(entries=1, bytes=2)


async def test_entry_bound_evicts_the_least_recently_used(make_store: MakeStore) -> None:
    store = make_store(max_entries=3)
    for key in "abc":
        await store.put("ns", key, key.encode(), None)
    assert await store.get("ns", "a") == b"a"  # a is now more recent than b
    await store.put("ns", "d", b"d", None)
    assert [await store.get("ns", k) for k in "abcd"] == [b"a", None, b"c", b"d"]
    assert (await store.stats()).entries == 3


async def test_byte_bound_evicts_the_least_recently_used_but_keeps_the_newest(make_store: MakeStore) -> None:
    store = make_store(max_bytes=100)
    for key in "abc":
        await store.put("ns", key, key.encode() * 40, None)  # 120 bytes offered: a goes
    assert await store.get("ns", "a") is None
    assert await store.get("ns", "b") == b"b" * 40
    await store.put("ns", "d", b"d" * 30, None)  # 110 bytes: c (least recent, b was just read) goes
    assert [await store.get("ns", k) is not None for k in "bcd"] == [True, False, True]
    assert await store.stats() == StoreStats(entries=2, bytes=70)
    await store.put("ns", "huge", b"h" * 500, None)  # larger than the bound alone: kept, everything else goes
    assert await store.get("ns", "huge") == b"h" * 500
    assert await store.stats() == StoreStats(entries=1, bytes=500)


@pytest.mark.parametrize("make_store", ["sqlite", "redis"], indirect=True)  # the memory store evicts by recency only
async def test_persistent_stores_purge_expired_rows_before_evicting_live_ones(make_store: MakeStore) -> None:
    store = make_store(max_entries=3)
    await store.put("ns", "old", b"1", None)
    await store.put("ns", "older", b"2", None)
    await store.put("ns", "brief", b"3", 0.1)  # the most recent entry, but it expires
    await asyncio.sleep(0.2)
    await store.put("ns", "new", b"4", None)
    assert [await store.get("ns", k) for k in ("old", "older", "new")] == [b"1", b"2", b"4"]
    assert await store.stats() == StoreStats(entries=3, bytes=3)


async def test_take_is_a_token_bucket(make_store: MakeStore) -> None:
    store = make_store()
    # slow rates, so that a loaded machine's time between calls (up to ~0.2 s) cannot change the figures
    waits = [await store.take("api", 0.5, 3) for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]  # the burst
    assert waits[3] == pytest.approx(2.0, abs=0.25) and waits[4] == pytest.approx(4.0, abs=0.25)
    assert await store.take("other-api", 0.5, 3) == 0.0  # buckets are independent
    await store.take("slow", 2.0, 1)
    await asyncio.sleep(0.75)  # refills 1.5 tokens, capped at the burst of 1
    assert await store.take("slow", 2.0, 1) == 0.0
    assert await store.take("slow", 2.0, 1) == pytest.approx(0.5, abs=0.15)
    with pytest.raises(ValueError):
        await store.take("bad", 0.0, 1)
    with pytest.raises(ValueError):
        await store.take("bad", 1.0, 0.5)


def _assert_reservations_are_serialized(waits: list[float], burst: int, rate: float) -> None:
    """With a negligible refill, the k-th reservation past the burst waits k/rate: no two callers got one slot."""
    expected = [0.0] * burst + [k / rate for k in range(1, len(waits) - burst + 1)]
    assert sorted(waits) == pytest.approx(expected, abs=10.0)  # 10 s of drift at 1000 s per slot


async def test_redis_bucket_and_entries_are_shared_by_two_clients(redis_url: str) -> None:
    prefix = f"shared-{uuid.uuid4().hex}:"
    one, two = RedisStore(redis_url, prefix=prefix), RedisStore(redis_url, prefix=prefix)
    try:
        await one.put("ns", "k", b"from one", None)
        assert await two.get("ns", "k") == b"from one"
        waits = await asyncio.gather(*(store.take("api", 0.001, 4) for _ in range(20) for store in (one, two)))
        _assert_reservations_are_serialized(list(waits), burst=4, rate=0.001)
    finally:
        await one.aclose()
        await two.aclose()


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from researchrl.web.sqlite_store import SQLiteStore

    async def main(path, name, start_at):
        store = SQLiteStore(path, max_entries=100)
        seen = await store.get("ns", "parent")
        time.sleep(max(0.0, start_at - time.time()))  # both processes start hammering the file together
        waits = []
        for i in range(60):
            await store.put("ns", f"{name}-{i}", f"{name}{i}".encode() * 10, None)
            if i % 3 == 0:
                waits.append(await store.take("api", 0.001, 5))
        await store.aclose()
        print(json.dumps({"seen": seen.decode(), "waits": waits}))

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
    """
)


async def test_sqlite_file_is_shared_by_two_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    parent = SQLiteStore(path, max_entries=100)
    try:
        await parent.put("ns", "parent", b"hello from the parent", None)
        start_at = time.time() + 1.5
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(path), name, str(start_at)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, text=True,
            )
            for name in ("a", "b")
        ]
        outputs = [proc.communicate(timeout=60) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outputs]
        reports = [json.loads(out) for out, _ in outputs]
        assert [r["seen"] for r in reports] == ["hello from the parent"] * 2
        # 121 puts through two processes into a 100-entry store: the bound and the running totals hold.
        stats = await parent.stats()
        assert stats.entries == 100
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT COUNT(*), SUM(size) FROM entries").fetchone() == (100, stats.bytes)
        survivors = {name for name in ("a", "b") if await parent.get("ns", f"{name}-59") is not None}
        assert survivors == {"a", "b"}  # each process's latest entry is there for the other (and the parent)
        waits = reports[0]["waits"] + reports[1]["waits"]
        _assert_reservations_are_serialized(waits, burst=5, rate=0.001)
    finally:
        await parent.aclose()


async def test_sqlite_calls_do_not_block_the_event_loop(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "busy.db")
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    gc.collect()
    gc.freeze()  # what earlier tests left in this process must not turn a cyclic-GC pause into a false "stall"
    try:
        ticking = asyncio.create_task(ticker())
        value = b"v" * 2000
        await asyncio.gather(*(store.put("ns", str(i % 500), value, None) for i in range(2000)))
        found = await asyncio.gather(*(store.get("ns", str(i % 500)) for i in range(2000)))
        done.set()
        await ticking
        assert found == [value] * 2000
        assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.3f} s"
    finally:
        gc.unfreeze()
        await store.aclose()


async def test_sqlite_failures_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="sqlite store"):
        SQLiteStore(tmp_path)  # a directory, not a database file
    store = SQLiteStore(tmp_path / "closed.db")
    await store.aclose()
    await store.aclose()  # closing twice is fine
    with pytest.raises(StoreError, match="closed"):
        await store.get("ns", "k")


async def test_redis_unreachable_is_a_store_error_without_the_password() -> None:
    store = RedisStore("redis://:s3cret-pass@127.0.0.1:1/0", timeout=0.5)  # nothing listens on port 1
    try:
        with pytest.raises(StoreError) as caught:
            await store.get("ns", "k")
        assert "s3cret-pass" not in str(caught.value) and "s3cret-pass" not in repr(store)
    finally:
        await store.aclose()


async def test_open_store_reads_every_spec(tmp_path: Path, redis_url: str) -> None:
    assert isinstance(open_store(None), MemoryStore) and isinstance(open_store("memory"), MemoryStore)
    for spec, path in [
        (f"sqlite://{tmp_path}/deep/er/cache.db", tmp_path / "deep" / "er" / "cache.db"),
        (str(tmp_path / "plain" / "cache.sqlite"), tmp_path / "plain" / "cache.sqlite"),
    ]:
        store = open_store(spec)
        assert isinstance(store, SQLiteStore) and store.path == path
        await store.put("ns", "k", b"v", None)
        await store.aclose()
        assert path.is_file()
    redis = open_store(redis_url)
    assert isinstance(redis, RedisStore)
    await redis.put("ns", f"open-{uuid.uuid4().hex}", b"v", None)
    await redis.aclose()
    for bad in ("http://example.com/cache", "sqlite://relative.db", "", "memcached://127.0.0.1"):
        with pytest.raises(ValueError, match="accepted"):
            open_store(bad)


# ---------------------------------------------------------------- SingleFlight


async def test_identical_keys_share_one_call() -> None:
    flight, calls = SingleFlight(), []

    async def work(key: str) -> str:
        calls.append(key)
        await asyncio.sleep(0.05)
        return f"result {key}"

    results = await asyncio.gather(
        *(flight.do("a", lambda: work("a")) for _ in range(50)), flight.do("b", lambda: work("b"))
    )
    assert results == ["result a"] * 50 + ["result b"]
    assert sorted(calls) == ["a", "b"] and (flight.leaders, flight.joins) == (2, 49)
    assert len(flight) == 0  # nothing is kept once calls end
    assert await flight.do("a", lambda: work("a")) == "result a" and calls.count("a") == 2  # not a cache


async def test_followers_get_the_leaders_exception() -> None:
    flight, calls = SingleFlight(), []

    async def failing() -> str:
        calls.append(1)
        await asyncio.sleep(0.02)
        raise LookupError("upstream said no")

    outcomes = await asyncio.gather(*(flight.do("k", failing) for _ in range(5)), return_exceptions=True)
    assert len(calls) == 1
    assert all(isinstance(o, LookupError) and str(o) == "upstream said no" for o in outcomes)
    assert len(flight) == 0


async def test_a_cancelled_follower_does_not_cancel_the_leader() -> None:
    flight, finished = SingleFlight(), []

    async def work() -> str:
        await asyncio.sleep(0.1)
        finished.append(True)
        return "done"

    leader = asyncio.create_task(flight.do("k", work))
    follower = asyncio.create_task(flight.do("k", work))
    await asyncio.sleep(0.02)
    follower.cancel()
    assert await leader == "done" and finished == [True]
    assert follower.cancelled()


async def test_a_cancelled_leader_leaves_the_call_to_its_followers() -> None:
    flight = SingleFlight()

    async def work() -> str:
        await asyncio.sleep(0.1)
        return "done"

    leader = asyncio.create_task(flight.do("k", work))
    await asyncio.sleep(0)
    follower = asyncio.create_task(flight.do("k", work))
    await asyncio.sleep(0.02)
    leader.cancel()
    assert await follower == "done" and leader.cancelled()
    assert (flight.leaders, flight.joins) == (1, 1)


async def test_the_call_is_cancelled_when_every_caller_has_gone() -> None:
    flight, seen = SingleFlight(), []

    async def work() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "never"

    callers = [asyncio.create_task(flight.do("k", work)) for _ in range(3)]
    await asyncio.sleep(0.02)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    await asyncio.sleep(0)
    assert seen == ["cancelled"] and len(flight) == 0
