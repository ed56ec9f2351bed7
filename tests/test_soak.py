"""Soak: scripted episodes, 20 at a time, through Ray tool workers and a Redis cache at 20 % faults on search, pages
and reader, while Ray workers and the Redis server are killed (SIGKILL) and come back.

It runs for $RESEARCHRL_SOAK_SECONDS (default 120: CI's `pytest -m slow` pass). The 30-minute soak:

    RESEARCHRL_SOAK_SECONDS=1800 .venv/bin/python -m pytest -m slow -s tests/test_soak.py

Asserted: every episode ends with a termination (no exception; a global deadline turns a hang into a failure);
the trajectories' errors match the sandboxes' fault counters, exactly up to the calls that died with a killed
worker (`check_accounting` says which relation holds and why); every trajectory line written parses; the pool
replaced every killed worker and the cache used every restarted Redis again; the test process's memory and open
file descriptors level off. The figures are printed at the end (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from researchrl.agent.loop import AgentConfig, run_episode
from researchrl.distributed.tools import RayToolPool, SandboxUpstreams
from researchrl.policy.base import Context
from researchrl.policy.scripted import Script, ScriptedPolicy
from researchrl.policy.tokenizers import ByteChatTokenizer
from researchrl.records import write_records
from researchrl.sandbox.config import SandboxConfig
from researchrl.sandbox.faults import APPLIES_TO, FAULT_KINDS, RATE_FIELDS, FaultConfig, Target
from researchrl.sandbox.reader_api import READER_MODEL
from researchrl.sandbox.server import SandboxServer
from researchrl.tools.base import Toolset
from researchrl.tools.browse import BrowseTool
from researchrl.tools.web_search import WebSearchTool
from researchrl.types import Question, Trajectory
from researchrl.web.cache import SingleFlight, open_reachable
from researchrl.web.cached import Cached
from researchrl.web.guard import Guarded
from researchrl.web.http import FetchConfig
from researchrl.web.kinds import EXTRACT, PAGE, READ, SEARCH
from researchrl.web.ledger import Ledger
from researchrl.web.limits import RateLimit
from researchrl.web.store_guard import GuardedStore
from tests.redis_server import RedisServer
from tests.test_fault_matrix import ERRORS, MAX_REDIRECTS, NO_RETRY, QUESTION, expert, mixed_faults

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

DURATION = float(os.environ.get("RESEARCHRL_SOAK_SECONDS", "120"))  # seconds during which new episodes start
CONCURRENCY = 20  # episodes at once
FAULT_RATE = 0.2  # per request at each of search, pages and reader, split evenly over the kinds that apply there
TIMEOUT = 3.0  # every client timeout: loose, so that on two busy cores only an injected hang outlasts it
HANG = 4.0  # a timeout fault hangs past it
WORKERS = 2  # Ray tool workers
WORKER_KILL_EVERY = 15.0  # seconds between SIGKILLs of a tool worker
REDIS_KILL_EVERY = 25.0  # seconds between SIGKILLs of redis-server ...
REDIS_DOWN = 4.0  # ... which is started again (same port, empty) this long after
REPLACED_WITHIN = 60.0  # seconds a killed worker may take to be replaced
SAMPLE_EVERY = 5.0  # seconds between samples of this process's memory and file descriptors
DRAIN = 60.0  # seconds the episodes still running at the end get to finish
REUSE_EVERY = 4  # every 4th episode repeats a finished episode's search and page, to be served by the cache
LOST = {"search": "search_worker_lost", "pages": "worker_lost", "reader": "reader_worker_lost"}  # per tool


def soak_faults(target: Target, seed: int) -> FaultConfig:
    """FAULT_RATE at `target`, split evenly over every kind that applies there; the matrix's mix otherwise."""
    kinds = [k for k in FAULT_KINDS if target in APPLIES_TO[k]]
    rates = {RATE_FIELDS[k]: FAULT_RATE / len(kinds) for k in kinds}
    return dataclasses.replace(mixed_faults(target, seed), hang_s=HANG, **rates)


def own_keys(script: Script, key: int) -> Script:
    """The matrix's expert with its query and page made key `key`'s own: no two running episodes share a cache key,
    so no call joins another's flight and each fault served is one error of one episode."""

    def play(context: Context) -> str:
        text = script(context)
        head, tag, rest = text.partition("<tool_call>\n")
        if not tag:
            return text
        call = json.loads(rest.removesuffix("\n</tool_call>"))
        args = call["arguments"]
        if "query" in args:
            args["query"] = [f"{q} ({key})" for q in args["query"]]
        else:
            args["url_list"] = [f"{url}?soak={key}" for url in args["url_list"]]
        return f"{head}{tag}{json.dumps(call)}\n</tool_call>"

    return play


@dataclass
class Tally:
    """What the soak saw, kept as counts only (trajectories go to the JSONL file, not to memory)."""

    episodes: int = 0
    reused: int = 0
    terminations: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    crashes: list[BaseException] = field(default_factory=list)
    worker_kills: int = 0
    lost_bound: int = 0  # calls that could have died with a killed worker (see check_accounting)
    redis_kills: int = 0
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (seconds, rss bytes, open fds)


@dataclass
class Rig:
    """The soak's web: three faulty sandboxes, a Ray tool pool, a Redis server, and the tools over them."""

    servers: dict[str, SandboxServer]
    pool: RayToolPool
    redis: RedisServer
    store: GuardedStore
    tools: Toolset


@contextlib.asynccontextmanager
async def soak_rig() -> AsyncIterator[Rig]:
    """The environment's layers as `open_environment` stacks them, over Ray workers with one try per call.

    Cache (single flight) → guard (rate limit on the store, ledger; no breaker: a breaker's refusals would be
    errors no sandbox served) → a Ray worker → the real clients, against search, pages and reader on 3 sandboxes.
    """
    configs = {"search": soak_faults("search", 1), "pages": soak_faults("pages", 2), "reader": soak_faults("reader", 3)}
    async with contextlib.AsyncExitStack() as stack:
        redis = RedisServer().start()
        stack.callback(redis.stop)
        servers = {name: stack.enter_context(SandboxServer(SandboxConfig(faults=c))) for name, c in configs.items()}
        pages_host = servers["pages"].url.removeprefix("http://")
        fetch = FetchConfig(connect_timeout=TIMEOUT, read_timeout=TIMEOUT, deadline=10.0, max_redirects=MAX_REDIRECTS,
                            per_host_concurrency=CONCURRENCY)
        factory = SandboxUpstreams(servers["search"].url, frozenset({pages_host}), reader="llm",
                                   reader_url=f"{servers['reader'].url}/v1", reader_model=READER_MODEL, timeout=TIMEOUT,
                                   reader_timeout=TIMEOUT, retry=NO_RETRY, fetch=fetch)
        pool = RayToolPool(factory, workers=WORKERS, max_replacements=1_000_000)
        stack.push_async_callback(pool.aclose)
        await pool.start()
        ledger = Ledger()
        store = GuardedStore(await open_reachable(redis.url), ledger)
        stack.push_async_callback(store.aclose)
        flight = SingleFlight()
        rate = RateLimit(store, "search:sandbox", qps=1000.0)  # never binding; it keeps the store's buckets busy
        search = Cached(SEARCH, Guarded(SEARCH, pool.tool(SEARCH, name="sandbox"), rate=rate, ledger=ledger),
                        store, flight=flight, counter=ledger)
        pages = Cached(PAGE, Guarded(PAGE, pool.tool(PAGE), ledger=ledger), store, flight=flight, counter=ledger)
        reader = Cached(READ, Guarded(READ, pool.tool(READ), ledger=ledger, provider="reader:sandbox"), store,
                        flight=flight, counter=ledger, provider="reader:sandbox", cache_id=f"llm:{READER_MODEL}")
        browse = BrowseTool(pages, reader, extract=pool.tool(EXTRACT).call)
        yield Rig(servers, pool, redis, store, Toolset([WebSearchTool(search), browse], ledger=ledger))


async def run_episodes(rig: Rig, tally: Tally, out: Path, until: float) -> None:
    """Start episodes CONCURRENCY at a time until `until`, then wait for the last ones; each is written when it ends."""
    gate = asyncio.Semaphore(CONCURRENCY)
    finished: list[int] = []  # keys of finished episodes, each repeated at most once (so never by two at a time)
    running: set[asyncio.Task[None]] = set()

    async def episode(i: int, key: int) -> None:
        policy = ScriptedPolicy(own_keys(expert(rig.servers["pages"].url), key), ByteChatTokenizer())
        try:
            trajectory: Trajectory = await run_episode(Question(f"q{i}", QUESTION, ("a spirit",)), policy, rig.tools,
                                                       AgentConfig())
        except Exception as err:  # noqa: BLE001 - every crash is collected and fails the test at the end
            tally.crashes.append(err)
            return
        finally:
            gate.release()
        tally.terminations[trajectory.termination] += 1
        tally.errors.update(trajectory.tool_errors)
        write_records(out, [trajectory], append=True, episode=i, key=key)
        if key == i:
            finished.append(key)

    while time.monotonic() < until:
        await gate.acquire()
        i = tally.episodes
        reuse = i % REUSE_EVERY == REUSE_EVERY - 1 and finished
        key = finished.pop() if reuse else i  # the latest: most likely still cached
        tally.episodes += 1
        tally.reused += bool(reuse)
        task = asyncio.ensure_future(episode(i, key))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.wait_for(asyncio.gather(*running), DRAIN)


async def kill_workers(pool: RayToolPool, tally: Tally, until: float) -> None:
    """Every WORKER_KILL_EVERY s until `until`, SIGKILL one tool worker's process, then wait until the pool replaced it.

    Calls that can die with it: those in flight on it at the kill, and those sent to it before the pool noticed
    (counted up to when the replacement is seen, so the bound may count a few calls of the new worker too).
    """
    while time.monotonic() + WORKER_KILL_EVERY < until:
        await asyncio.sleep(WORKER_KILL_EVERY)
        slot = tally.worker_kills % WORKERS
        doomed = pool.workers[slot]
        pid = (await doomed.stats.remote()).pid
        sent_before, in_flight = pool.calls[slot], pool.in_flight[slot]
        os.kill(pid, signal.SIGKILL)
        tally.worker_kills += 1
        deadline = time.monotonic() + REPLACED_WITHIN
        while pool.workers[slot] is doomed:
            assert time.monotonic() < deadline, f"worker {slot} (pid {pid}) not replaced within {REPLACED_WITHIN} s"
            await asyncio.sleep(0.05)
        tally.lost_bound += in_flight + pool.calls[slot] - sent_before


async def kill_redis(redis: RedisServer, tally: Tally, until: float) -> None:
    """Every REDIS_KILL_EVERY s until `until`, SIGKILL redis-server; start it again (same port, empty) REDIS_DOWN s
    later, or at once when the soak ends first."""
    while time.monotonic() + REDIS_KILL_EVERY < until:
        await asyncio.sleep(REDIS_KILL_EVERY - REDIS_DOWN)
        try:
            tally.redis_kills += 1
            await asyncio.to_thread(redis.kill)
            await asyncio.sleep(REDIS_DOWN)
        finally:
            await asyncio.to_thread(redis.start)


async def sample(tally: Tally, started: float) -> None:
    """Every SAMPLE_EVERY s, this process's resident memory and open file descriptors."""
    me = psutil.Process()
    while True:
        tally.samples.append((time.monotonic() - started, me.memory_info().rss, me.num_fds()))
        await asyncio.sleep(SAMPLE_EVERY)


def check_accounting(errors: Counter[str], injected: dict[str, dict[str, int]], pool: RayToolPool, lost_bound: int
                     ) -> None:
    """Trajectory errors against the sandboxes' fault counters.

    With one try per call and no two running episodes sharing a cache key, each fault a sandbox serves reaches
    exactly one client call, whose error lands in exactly one trajectory. Killed workers break only this: a fault
    served to a worker that then died never came back; its call answered `worker_lost` instead. So per error name,
    trajectory errors <= faults served, and per endpoint the faults missing <= its tool's worker_lost errors. Every
    worker_lost error is a call the pool saw die (`pool.lost`), and no more calls died than could: those in flight
    on, or sent to, a worker between its kill and its replacement (`lost_bound`).
    """
    known = set(ERRORS.values()) | set(LOST.values())
    assert set(errors) <= known, f"errors no fault explains: {set(errors) - known}"
    for target, counts in injected.items():
        served: Counter[str] = Counter()
        for kind, n in counts.items():
            if kind != "requests" and n:
                served[ERRORS[(target, kind)]] += n
        missing = {name: n - errors[name] for name, n in served.items()}
        assert all(n >= 0 for n in missing.values()), f"{target}: more errors than faults served: {missing}"
        assert sum(missing.values()) <= errors[LOST[target]], f"{target}: faults unaccounted for: {missing}"
    lost = sum(errors[name] for name in LOST.values())
    assert lost == pool.lost <= lost_bound, (lost, pool.lost, lost_bound)


def check_jsonl(path: Path, episodes: int) -> None:
    """One complete JSON object per line, one line per episode, nothing cut short (read a line at a time)."""
    seen = set()
    with path.open() as lines:
        for line in lines:
            assert line.endswith("\n"), "a line was cut short"
            row = json.loads(line)
            assert row["termination"] == "answer"
            seen.add(row["episode"])
    assert seen == set(range(episodes)), "one line per episode"


def check_levels_off(samples: list[tuple[float, int, int]]) -> None:
    """After a warm-up (a quarter of the run, at least 30 s), memory and file descriptors may wobble, not climb."""
    warm = next((s for s in samples if s[0] >= max(30.0, DURATION / 4)), samples[-1])
    peak_rss = max(s[1] for s in samples if s[0] >= warm[0])
    peak_fds = max(s[2] for s in samples if s[0] >= warm[0])
    assert peak_rss <= warm[1] * 1.25 + 64 * 2**20, f"memory climbed from {warm[1] >> 20} MiB to {peak_rss >> 20} MiB"
    assert peak_fds <= warm[2] + 64, f"open file descriptors climbed from {warm[2]} to {peak_fds}"


def report(tally: Tally, injected: dict[str, dict[str, int]], rig: Rig, out: Path, seconds: float) -> str:
    """The soak's figures, one block."""
    faults = {t: {k: n for k, n in c.items() if n} for t, c in injected.items()}
    first, last = tally.samples[0], tally.samples[-1]
    return "\n".join([
        f"soak: {tally.episodes} episodes ({tally.reused} repeating a finished one) in {seconds:.0f} s, "
        f"terminations {dict(tally.terminations)}",
        *(f"  {target}: {counts}" for target, counts in faults.items()),
        f"  errors in trajectories: {dict(tally.errors.most_common())}",
        f"  worker kills {tally.worker_kills}, replaced {rig.pool.replaced}, calls lost {rig.pool.lost} "
        f"(at most {tally.lost_bound} could be)",
        f"  {out.name}: {out.stat().st_size / 2**20:.1f} MiB; redis kills {tally.redis_kills}, "
        f"store outages {rig.store.outages}, store errors {rig.store.errors}, skipped {rig.store.skipped}; ledger {rig.tools.ledger.metrics()['web/cache_hit_rate']:.2f} cache hit rate",
        f"  rss {first[1] >> 20} -> {last[1] >> 20} MiB, fds {first[2]} -> {last[2]} "
        f"(samples every {SAMPLE_EVERY:g} s: {[(round(t), rss >> 20, fds) for t, rss, fds in tally.samples[::6]]})",
    ])


async def test_soak_under_faults_and_kills(tmp_path: Path) -> None:
    tally, out = Tally(), tmp_path / "trajectories.jsonl"
    async with soak_rig() as rig:
        started = time.monotonic()
        until = started + DURATION
        chaos = [asyncio.ensure_future(c) for c in (kill_workers(rig.pool, tally, until),
                                                    kill_redis(rig.redis, tally, until), sample(tally, started))]
        try:
            await asyncio.wait_for(run_episodes(rig, tally, out, until), DURATION + DRAIN + 30)
        finally:
            for task in chaos:
                task.cancel()
            outcomes = await asyncio.gather(*chaos, return_exceptions=True)
        for outcome in outcomes:  # an assertion inside a killer fails the test
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                raise outcome
        injected = {name: server.faults for name, server in rig.servers.items()}
        print("\n" + report(tally, injected, rig, out, time.monotonic() - started))

        if tally.crashes:
            raise tally.crashes[0]
        assert sum(tally.terminations.values()) == tally.episodes
        assert tally.terminations == Counter({"answer": tally.episodes}), "the expert answers in every episode"
        check_accounting(tally.errors, injected, rig.pool, tally.lost_bound)
        check_jsonl(out, tally.episodes)
        check_levels_off(tally.samples)
        assert rig.pool.replaced == tally.worker_kills >= 1
        assert rig.store.outages == tally.redis_kills >= 1, "each kill one outage, each outage over before the next"
        await asyncio.sleep(rig.store.retry_in)
        await rig.store.put("soak", "last", b"1", None)  # the trial after any last outage
        assert not rig.store.down and await rig.store.backend.get("soak", "last") == b"1", "the restarted Redis is used"
