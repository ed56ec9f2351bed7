"""Stateless tool workers on Ray: search, fetch, read and extract calls spread over a pool of worker processes.

Episode state lives in the agent loop, so any worker can serve any call. Each worker builds its upstream
clients once, from a picklable zero-argument factory, and serves many calls concurrently (an async actor).
The pool hands out one proxy per kind of call (`RayToolPool.tool(SEARCH)`, ...), which answers the kind's method.

Errors reach the caller as the protocol's own exception, never as a Ray wrapper:

    SearchError / FetchError / ReaderError   raised by the upstream inside the worker, sent back as a
                                             FaultRecord and raised again here with the same type, kind and message
    kind "worker_timeout"                    the worker did not answer within the proxy's timeout (call cancelled);
                                             the clock starts when the call is sent to a worker with a free slot
    kind "worker_lost"                       the worker process died; the pool replaces it for later calls

Any other exception in a worker is a bug in our code and propagates (as Ray's RayTaskError).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from researchrl.distributed.cluster import actor_class, connect, kill, require_ray, shutdown_if_ours, stop_actors
from researchrl.errors import ConfigError
from researchrl.search.base import SearchBackend
from researchrl.tools.browse import PageSource
from researchrl.tools.pages import extract_text
from researchrl.tools.reader import Reader
from researchrl.types import Page
from researchrl.web.fault_record import FaultRecord
from researchrl.web.http import FetchConfig
from researchrl.web.kinds import EXTRACT, PAGE, READ, SEARCH, Layer, ToolKind
from researchrl.web.retry import RetryPolicy

Upstreams = tuple[SearchBackend | dict[str, SearchBackend], PageSource, Reader]
UpstreamFactory = Callable[[], Upstreams]


@dataclass(frozen=True)
class WorkerStats:
    """What one worker process has served, by method; `pid` tells workers apart."""

    pid: int
    search: int
    fetch: int
    read: int


class Extractor:
    """Main-text extraction in this process, off the event loop (the CPU-heavy step of a browse)."""

    async def extract(self, page: Page) -> str:
        """The page's main text."""
        return await asyncio.to_thread(extract_text, page)


class ToolWorker:
    """One worker process: upstream clients built once, shared by its concurrent calls (run as a Ray async actor)."""

    def __init__(self, factory: UpstreamFactory):
        searches, pages, reader = factory()
        # one search provider, or several by name (a failover chain keeps its guards driver-side, one proxy each)
        named = searches.items() if isinstance(searches, dict) else [("", searches)]
        self.kinds = {kind.name: kind for kind in (SEARCH, PAGE, READ, EXTRACT)}
        self.upstreams: dict[tuple[str, str], Any] = {(SEARCH.name, name): backend for name, backend in named}
        self.upstreams |= {(PAGE.name, ""): pages, (READ.name, ""): reader, (EXTRACT.name, ""): Extractor()}
        self.served: Counter[str] = Counter()

    async def call(self, kind_name: str, args: tuple[Any, ...], provider: str = "") -> Any:  # noqa: ANN401
        """The answer of the upstream of `kind_name` (by `provider` when there are several), or its fault as data."""
        kind = self.kinds[kind_name]
        self.served[kind.method] += 1
        upstream = self.upstreams.get((kind_name, provider))
        if upstream is None:  # the one provider, whatever the proxy calls it
            upstream = self.upstreams[kind_name, ""]
        try:
            return await getattr(upstream, kind.method)(*args)
        except kind.fault as err:
            return FaultRecord.of(err)

    async def stats(self) -> WorkerStats:
        """Calls served so far (also a readiness probe)."""
        return WorkerStats(os.getpid(), self.served["search"], self.served["fetch"], self.served["read"])

    async def close(self) -> None:
        """Close the upstreams' connection pools before the process is killed."""
        for upstream in self.upstreams.values():
            closer = getattr(upstream, "aclose", None)
            if closer is not None:
                await closer()


class RayToolPool:
    """A pool of ToolWorker actors; hands out proxies that satisfy SearchBackend, PageSource and Reader."""

    def __init__(
        self,
        factory: UpstreamFactory,
        workers: int,
        address: str | None = None,
        timeout: float = 120.0,
        max_concurrency: int = 1000,
        max_replacements: int = 16,
    ):
        if workers < 1:
            raise ValueError("a tool pool needs at least one worker")
        self.factory = factory
        self.size = workers
        self.address = address  # None: a local Ray instance; else the cluster to join
        self.timeout = timeout  # seconds a remote call may take (upstream timeouts and retries included)
        self.max_concurrency = max_concurrency  # concurrent calls one worker serves
        self.max_replacements = max_replacements  # dead workers replaced; past this a dead slot is skipped
        self.calls = [0] * workers  # calls dispatched to each slot
        self.replaced = 0
        self.lost = 0  # calls whose worker died under them (each answered worker_lost)
        self._actors: list[Any | None] = []
        self._outstanding = [0] * workers
        # calls sent to the workers at once: each has a free one of its max_concurrency slots for the least busy
        # worker to start it on arrival, so no call's timeout runs while it queues inside Ray; the rest wait here
        self._free = asyncio.Semaphore(workers * max_concurrency)
        self._turn = 0
        self._ours = False

    @property
    def workers(self) -> list[Any]:
        """The live actor handles, by slot."""
        return [actor for actor in self._actors if actor is not None]

    @property
    def in_flight(self) -> list[int]:
        """Calls dispatched and not yet answered, by slot."""
        return list(self._outstanding)

    async def start(self, timeout: float = 120.0) -> RayToolPool:
        """Connect to Ray, start the workers, and wait until each has built its upstreams."""
        self._ours = connect(self.address, None)
        self._actors = [self._spawn() for _ in range(self.size)]
        await asyncio.wait_for(self.stats(), timeout)
        return self

    async def stats(self) -> list[WorkerStats]:
        """What each live worker has served, by slot."""
        return await asyncio.gather(*(actor.stats.remote() for actor in self.workers))

    async def aclose(self) -> None:
        """Close the workers' clients (briefly), kill the actors, and shut Ray down if this pool started it."""
        actors, self._actors = self.workers, []
        await stop_actors(actors, [a.close.remote() for a in actors], timeout=10)
        shutdown_if_ours(self._ours)
        self._ours = False

    async def __aenter__(self) -> RayToolPool:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def tool(self, kind: ToolKind, timeout: float | None = None, name: str = "ray") -> RemoteTool:
        """A proxy whose calls of `kind` run on the pool; `name` is the search provider the workers ask."""
        return RemoteTool(self, kind, timeout or self.timeout, name)

    async def call(self, kind: ToolKind, args: tuple[Any, ...], timeout: float, source: str) -> Any:  # noqa: ANN401
        """Run a call of `kind` on the least busy worker, once one has a free slot (`timeout` counts from then); its
        faults are the kind's (a search's blame `source`)."""
        if not self._actors:
            raise RuntimeError("start the tool pool before calling it")
        async with self._free:
            return await self._send(kind, args, timeout, source)

    async def _send(self, kind: ToolKind, args: tuple[Any, ...], timeout: float, source: str) -> Any:  # noqa: ANN401
        """`call` on the least busy worker, now."""
        ray = require_ray()

        def fault(fault_kind: str, message: str) -> Exception:
            return kind.blame(source, args, fault_kind, message)

        slot = self._pick()
        if slot is None:
            raise fault("worker_lost", "no live tool workers left in the pool")
        actor = self._actors[slot]
        self.calls[slot] += 1
        self._outstanding[slot] += 1
        ref = actor.call.remote(kind.name, args, source)
        try:
            result = await asyncio.wait_for(ref, timeout)
        except asyncio.TimeoutError:
            ray.cancel(ref)
            raise fault("worker_timeout", f"tool worker {slot} did not answer {kind.method} within {timeout} s") from None
        except ray.exceptions.RayActorError:
            self.lost += 1
            self._replace(slot, actor)
            raise fault("worker_lost", f"tool worker {slot} died during {kind.method}") from None
        finally:
            self._outstanding[slot] -= 1
        if isinstance(result, FaultRecord):
            raise result.rebuild(kind.fault)
        return result

    def _spawn(self) -> Any:  # noqa: ANN401
        """A new worker actor (its upstreams are built in its own process)."""
        return actor_class(ToolWorker, self.max_concurrency).remote(self.factory)

    def _pick(self) -> int | None:
        """The live slot with the fewest calls in flight; ties go round-robin. None when every slot is dead."""
        live = [i for i, actor in enumerate(self._actors) if actor is not None]
        if not live:
            return None
        self._turn += 1
        start = self._turn % len(live)
        return min(live[start:] + live[:start], key=self._outstanding.__getitem__)

    def _replace(self, slot: int, dead: Any) -> None:  # noqa: ANN401
        """Swap a dead actor for a fresh one (once, however many calls saw it die); past the budget, skip the slot."""
        if self._actors[slot] is not dead:
            return
        kill(dead)
        if self.replaced >= self.max_replacements:
            self._actors[slot] = None
            return
        self.replaced += 1
        self._actors[slot] = self._spawn()


@dataclass
class RemoteTool(Layer):
    """Calls of one kind on a RayToolPool; it answers the kind's method (`search`, `fetch`, `read`, `extract`)."""

    pool: RayToolPool
    kind: ToolKind
    timeout: float
    name: str  # search: the provider the workers ask, named by its errors

    async def call(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        """One call, made by a worker."""
        return await self.pool.call(self.kind, self.kind.args(*args, **kwargs), self.timeout, self.name)

    async def aclose(self) -> None:
        """Nothing to release here: the pool owns the workers."""


@dataclass(frozen=True)
class SandboxUpstreams:
    """Upstream factory for a sandbox (or any Serper-compatible API plus allowlisted page hosts), picklable."""

    search_url: str  # Serper-compatible base URL, e.g. the sandbox's
    allow_hosts: frozenset[str]  # "host:port" the fetcher may reach past the SSRF guard
    reader: Literal["extractive", "llm"] = "extractive"
    reader_url: str | None = None  # OpenAI-compatible base URL for reader="llm" (key from READER_API_KEY)
    reader_model: str = "qwen-plus"  # the paper's reader model
    timeout: float = 15.0  # seconds per search request
    reader_timeout: float = 60.0  # seconds per network operation of the LLM reader
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # search, fetch and LLM reader retries
    fetch: FetchConfig = field(default_factory=FetchConfig)  # allow_hosts and retry above override its own

    def __call__(self) -> Upstreams:
        """Build the clients (called once, inside the worker process)."""
        from researchrl.search.serper import SerperSearch
        from researchrl.tools.reader import ExtractiveReader, LLMReader
        from researchrl.web.http import Fetcher

        search = SerperSearch(api_key="sandbox", base_url=self.search_url, timeout=self.timeout, retry=self.retry)
        pages = Fetcher(replace(self.fetch, allow_hosts=self.allow_hosts | self.fetch.allow_hosts, retry=self.retry))
        if self.reader == "extractive":
            return search, pages, ExtractiveReader()
        if not self.reader_url:
            raise ConfigError("reader='llm' needs reader_url (an OpenAI-compatible base URL)")
        reader = LLMReader(self.reader_url, self.reader_model, timeout=self.reader_timeout, retry=self.retry)
        return search, pages, reader
