"""Stateless tool workers on Ray: search, fetch and read calls spread over a pool of worker processes.

Episode state lives in the agent loop, so any worker can serve any call. Each worker builds its upstream
clients once, from a picklable zero-argument factory, and serves many calls concurrently (an async actor).

Errors reach the caller as the protocol's own exception, never as a Ray wrapper:

    SearchError / FetchError / ReaderError   raised by the upstream inside the worker, sent back as a
                                             RemoteFault and re-raised here with the same type, kind and message
    kind "worker_timeout"                    the worker did not answer within the proxy's timeout (call cancelled)
    kind "worker_lost"                       the worker process died; the pool replaces it for later calls

Any other exception in a worker is a bug in our code and propagates (as Ray's RayTaskError).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from researchrl.distributed.cluster import connect, require_ray, shutdown_if_ours
from researchrl.search.base import MissingCredentials, SearchBackend, SearchError
from researchrl.tools.browse import PageSource
from researchrl.tools.pages import extract_text
from researchrl.tools.reader import Reader, ReaderError, ReadRequest, ReadResult
from researchrl.types import Page, SearchResult
from researchrl.web.errors import FetchError
from researchrl.web.http import FetchConfig
from researchrl.web.retry import RetryPolicy

Upstreams = tuple[SearchBackend, PageSource, Reader]
UpstreamFactory = Callable[[], Upstreams]
ToolFault = SearchError | FetchError | ReaderError


@dataclass(frozen=True)
class RemoteFault:
    """An environment fault raised inside a worker, as plain data (these exceptions do not survive pickling)."""

    error: Literal["search", "missing_credentials", "fetch", "reader"]
    source: str  # provider (search, missing_credentials), url (fetch); "" for the reader
    kind: str
    message: str  # the constructor's message (the env var for missing_credentials)

    @classmethod
    def of(cls, err: ToolFault) -> RemoteFault:
        """The fault `err` describes; its message is the constructor's, without the kind prefix the class adds."""
        if isinstance(err, MissingCredentials):
            return cls("missing_credentials", err.provider, err.kind, err.env_var)
        if isinstance(err, SearchError):
            return cls("search", err.provider, err.kind, str(err).removeprefix(f"{err.provider}: {err.kind}: "))
        if isinstance(err, FetchError):
            return cls("fetch", err.url, err.kind, str(err).removeprefix(f"{err.kind}: "))
        return cls("reader", "", err.kind, str(err).removeprefix(f"{err.kind}: "))

    def rebuild(self) -> ToolFault:
        """The same exception, raised again on this side."""
        if self.error == "missing_credentials":
            return MissingCredentials(self.source, self.message)
        if self.error == "search":
            return SearchError(self.source, self.kind, self.message)
        if self.error == "fetch":
            return FetchError(self.source, self.kind, self.message)
        return ReaderError(self.kind, self.message)


@dataclass(frozen=True)
class WorkerStats:
    """What one worker process has served, by method; `pid` tells workers apart."""

    pid: int
    search: int
    fetch: int
    read: int


class ToolWorker:
    """One worker process: upstream clients built once, shared by its concurrent calls (run as a Ray async actor)."""

    def __init__(self, factory: UpstreamFactory):
        searches, self.page_source, self.reader = factory()
        # one provider, or several by name (a failover chain keeps its guards driver-side, one proxy per provider)
        self.searches: dict[str, SearchBackend] | None = searches if isinstance(searches, dict) else None
        self.search_backend = None if isinstance(searches, dict) else searches
        self.served: Counter[str] = Counter()

    async def search(self, query: str, num: int, provider: str = "") -> list[SearchResult] | RemoteFault:
        """Search results from `provider` (when the factory built several), or the SearchError as data."""
        self.served["search"] += 1
        backend = self.searches[provider] if self.searches is not None else self.search_backend
        try:
            return await backend.search(query, num)
        except SearchError as err:
            return RemoteFault.of(err)

    async def fetch(self, url: str) -> Page | RemoteFault:
        """The page, or the FetchError as data."""
        self.served["fetch"] += 1
        try:
            return await self.page_source.fetch(url)
        except FetchError as err:
            return RemoteFault.of(err)

    async def extract(self, page: Page) -> str:
        """A page's main text, extracted in this worker's process (the CPU-heavy step of a browse)."""
        self.served["extract"] += 1
        return await asyncio.to_thread(extract_text, page)

    async def read(self, request: ReadRequest) -> ReadResult | RemoteFault:
        """The reader's result, or the ReaderError as data."""
        self.served["read"] += 1
        try:
            return await self.reader.read(request)
        except ReaderError as err:
            return RemoteFault.of(err)

    async def stats(self) -> WorkerStats:
        """Calls served so far (also a readiness probe)."""
        return WorkerStats(os.getpid(), self.served["search"], self.served["fetch"], self.served["read"])

    async def close(self) -> None:
        """Close the upstreams' connection pools before the process is killed."""
        for upstream in (*(self.searches or {"": self.search_backend}).values(), self.page_source, self.reader):
            closer = getattr(upstream, "aclose", None)
            if closer is not None:
                await closer()


@functools.cache
def _remote_class(cls: type, max_concurrency: int) -> Any:  # noqa: ANN401
    """`cls` as a Ray actor class, made once per process (Ray is imported only here, when a pool starts)."""
    return require_ray().remote(max_concurrency=max_concurrency)(cls)


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
        self._actors: list[Any | None] = []
        self._outstanding = [0] * workers
        self._turn = 0
        self._ours = False

    @property
    def workers(self) -> list[Any]:
        """The live actor handles, by slot."""
        return [actor for actor in self._actors if actor is not None]

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
        ray = require_ray()
        actors, self._actors = self.workers, []
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(a.close.remote() for a in actors), return_exceptions=True), 10)
        for actor in actors:
            ray.kill(actor)
        shutdown_if_ours(self._ours)
        self._ours = False

    async def __aenter__(self) -> RayToolPool:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def search(self, name: str = "ray", timeout: float | None = None) -> RemoteSearch:
        """A SearchBackend whose calls run on the pool; `name` labels its worker_timeout/worker_lost errors."""
        return RemoteSearch(self, name, timeout or self.timeout)

    def pages(self, timeout: float | None = None) -> RemotePages:
        """A PageSource whose fetches run on the pool."""
        return RemotePages(self, timeout or self.timeout)

    def reader(self, timeout: float | None = None) -> RemoteReader:
        """A Reader whose reads run on the pool."""
        return RemoteReader(self, timeout or self.timeout)

    def extractor(self, timeout: float | None = None) -> RemoteExtractor:
        """BrowseTool's `extract`: page text extraction on the pool, so its CPU work spreads over the workers."""
        return RemoteExtractor(self, timeout or self.timeout)

    async def call(
        self, method: str, args: tuple[Any, ...], timeout: float, fault: Callable[[str, str], ToolFault]
    ) -> Any:  # noqa: ANN401
        """Run `method` on the least busy worker; environment faults come back as `fault(kind, message)` errors."""
        ray = require_ray()
        if not self._actors:
            raise RuntimeError("start the tool pool before calling it")
        slot = self._pick()
        if slot is None:
            raise fault("worker_lost", "no live tool workers left in the pool")
        actor = self._actors[slot]
        self.calls[slot] += 1
        self._outstanding[slot] += 1
        ref = getattr(actor, method).remote(*args)
        try:
            result = await asyncio.wait_for(ref, timeout)
        except asyncio.TimeoutError:
            ray.cancel(ref)
            raise fault("worker_timeout", f"tool worker {slot} did not answer {method} within {timeout} s") from None
        except ray.exceptions.RayActorError:
            self._replace(slot, actor)
            raise fault("worker_lost", f"tool worker {slot} died during {method}") from None
        finally:
            self._outstanding[slot] -= 1
        if isinstance(result, RemoteFault):
            raise result.rebuild()
        return result

    def _spawn(self) -> Any:  # noqa: ANN401
        """A new worker actor (its upstreams are built in its own process)."""
        return _remote_class(ToolWorker, self.max_concurrency).remote(self.factory)

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
        with contextlib.suppress(Exception):
            require_ray().kill(dead)
        if self.replaced >= self.max_replacements:
            self._actors[slot] = None
            return
        self.replaced += 1
        self._actors[slot] = self._spawn()


@dataclass
class RemoteSearch:
    """SearchBackend on a RayToolPool."""

    pool: RayToolPool
    name: str
    timeout: float

    async def search(self, query: str, num: int = 10) -> list[SearchResult]:
        """Top `num` results for `query`, searched by a worker."""
        return await self.pool.call("search", (query, num, self.name), self.timeout, functools.partial(SearchError, self.name))

    async def aclose(self) -> None:
        """Nothing to release here: the pool owns the workers."""


@dataclass
class RemotePages:
    """PageSource on a RayToolPool."""

    pool: RayToolPool
    timeout: float

    async def fetch(self, url: str) -> Page:
        """The page at `url`, fetched by a worker."""
        return await self.pool.call("fetch", (url,), self.timeout, functools.partial(FetchError, url))

    async def aclose(self) -> None:
        """Nothing to release here: the pool owns the workers."""


@dataclass
class RemoteReader:
    """Reader on a RayToolPool."""

    pool: RayToolPool
    timeout: float

    async def read(self, req: ReadRequest) -> ReadResult:
        """One segment read by a worker."""
        return await self.pool.call("read", (req,), self.timeout, ReaderError)

    async def aclose(self) -> None:
        """Nothing to release here: the pool owns the workers."""


@dataclass
class RemoteExtractor:
    """Main-text extraction on a RayToolPool; a lost or slow worker is the page's FetchError."""

    pool: RayToolPool
    timeout: float

    async def __call__(self, page: Page) -> str:
        """The page's main text, extracted by a worker."""
        return await self.pool.call("extract", (page,), self.timeout, functools.partial(FetchError, page.url))


@dataclass(frozen=True)
class SandboxUpstreams:
    """Upstream factory for a sandbox (or any Serper-compatible API plus allowlisted page hosts), picklable."""

    search_url: str  # Serper-compatible base URL, e.g. the sandbox's
    allow_hosts: frozenset[str]  # "host:port" the fetcher may reach past the SSRF guard
    reader: Literal["extractive", "llm"] = "extractive"
    reader_url: str | None = None  # OpenAI-compatible base URL for reader="llm" (key from READER_API_KEY)
    reader_model: str = "qwen-plus"  # the paper's reader model
    timeout: float = 15.0  # seconds per search request
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
            raise ValueError("reader='llm' needs reader_url (an OpenAI-compatible base URL)")
        return search, pages, LLMReader(base_url=self.reader_url, model=self.reader_model, retry=self.retry)
