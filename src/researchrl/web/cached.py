"""A store and single-flight in front of the three upstreams (search, pages, reader): cache, record and replay.

Modes (`--web`):
    live    no cache at all: every call goes upstream
    cache   read-through with a TTL (search results 7 days, as in the paper); environment errors are not stored
    record  read-through without expiry that stores every upstream answer INCLUDING environment errors,
            so a replay reproduces the faults too
    replay  only the store answers; upstream is never called (it may be None); a miss raises ReplayMiss

Identical calls in flight at the same moment (16 rollouts of one question searching the same thing)
share one upstream call. Entries are JSON; an error entry keeps the exception's class, args and
attributes and is raised again as that class. Page bodies are content-addressed: namespace "url" maps
a URL to {hash, final url, status, content type} and "blob" maps the hash to the body, so one body
served under many URLs is stored once.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from researchrl.search.base import SearchBackend, SearchError
from researchrl.tools.browse import PageSource
from researchrl.tools.reader import Reader, ReaderError, ReadRequest, ReadResult, render_reader_prompt
from researchrl.types import Page, SearchResult
from researchrl.web.cache import SingleFlight, Store, cache_key
from researchrl.web.errors import FetchError
from researchrl.web.guard import REFUSALS

T = TypeVar("T")
E = TypeVar("E", bound=Exception)
Mode = Literal["live", "cache", "record", "replay"]
MODES: tuple[Mode, ...] = ("live", "cache", "record", "replay")
DAY = 86_400.0


class ReplayMiss(Exception):
    """Replay asked for something never recorded; deliberately not an environment error, so no tool swallows it."""

    def __init__(self, label: str):
        super().__init__(
            f"replay miss: nothing recorded for {label}; record it first (run again with --web record on the same cache)"
        )
        self.label = label


class HitCounter(Protocol):
    """Told about every call answered without an upstream call of its own (the cost ledger implements it)."""

    def hit(self, kind: str, provider: str) -> None: ...


@dataclass(frozen=True)
class CacheTTL:
    """Seconds an entry stays fresh in cache mode (record and replay never expire entries)."""

    search: float = 7 * DAY  # paper: search results cached for 7 days
    page: float = 7 * DAY
    reader: float = 30 * DAY  # a reader's answer only changes with its inputs, which the key holds


def normalize_query(query: str) -> str:
    """The form queries are keyed by: NFKC, case-folded, whitespace collapsed and stripped."""
    return " ".join(unicodedata.normalize("NFKC", query).casefold().split())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dump(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def encode_error(err: Exception) -> dict[str, Any]:
    """An environment error as JSON: its class name, constructor-free args, and plain attributes (kind, url, ...)."""
    attrs = {k: v for k, v in vars(err).items() if isinstance(v, (str, int, float, bool, type(None)))}
    return {"type": f"{type(err).__module__}.{type(err).__qualname__}", "args": list(err.args), "attrs": attrs}


def decode_error(data: dict[str, Any], base: type[E]) -> E:
    """The recorded error as its own class (looked up among `base`'s loaded subclasses, never imported by name).

    A subclass whose module is not loaded in this process comes back as `base`, with the same kind and message.
    """
    classes, pending = [], [base]
    while pending:
        cls = pending.pop()
        classes.append(cls)
        pending.extend(cls.__subclasses__())
    cls = next((c for c in classes if f"{c.__module__}.{c.__qualname__}" == data["type"]), base)
    err = cls.__new__(cls)
    Exception.__init__(err, *data["args"])
    vars(err).update(data["attrs"])
    return err


@dataclass
class _Found(Generic[T]):
    """What the store holds for a key: a value or a recorded environment error."""

    value: T | None = None
    error: Exception | None = None


class _ReadThrough:
    """The mode rules, single-flight and counters the three wrappers share.

    Counters: `upstream_calls` made; `hits` and `misses` of the store lookups (one per flight);
    `joins`, calls answered by an identical call already in flight. The counter's `hit` is told about
    every store hit and every join (neither costs an upstream call).
    """

    kind: str  # "search" | "page" | "read", as the ledger names it
    errors: type[Exception]  # the environment error this upstream raises

    def __init__(
        self, upstream: Any, store: Store, mode: Mode, flight: SingleFlight | None, counter: HitCounter | None,
        provider: str,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown web mode {mode!r}; use one of {', '.join(MODES)}")
        if upstream is None and mode != "replay":
            raise ValueError(f"{type(self).__name__} needs an upstream in {mode} mode (only replay works without)")
        self.upstream = upstream
        self.store = store
        self.mode = mode
        self.flight = flight if flight is not None else SingleFlight()
        self.counter = counter
        self.provider = provider
        self.hits = self.misses = self.upstream_calls = self.joins = 0

    async def aclose(self) -> None:
        """Close the upstream if it can be closed (the store belongs to whoever opened it)."""
        close = getattr(self.upstream, "aclose", None)
        if close is not None:
            await close()

    def _ttl(self, seconds: float) -> float | None:
        """Entries expire in cache mode only: a recording is kept until it is recorded again."""
        return seconds if self.mode == "cache" else None

    async def _serve(
        self,
        key: str,
        label: str,
        lookup: Callable[[], Awaitable[_Found[T] | None]],
        call: Callable[[], Awaitable[T]],
        save: Callable[[T | None, Exception | None], Awaitable[None]],
    ) -> T:
        """One call under the mode's rules; `label` names the key for people (replay misses)."""
        if self.mode == "live":
            self.upstream_calls += 1
            return await call()
        led = False

        async def lead() -> T:
            nonlocal led
            led = True
            return await self._lead(label, lookup, call, save)

        try:
            return await self.flight.do(f"{self.kind}:{key}", lead)
        finally:
            if not led:
                self.joins += 1
                self._hit()

    async def _lead(
        self,
        label: str,
        lookup: Callable[[], Awaitable[_Found[T] | None]],
        call: Callable[[], Awaitable[T]],
        save: Callable[[T | None, Exception | None], Awaitable[None]],
    ) -> T:
        """Store first; then upstream (not in replay), saving its answer, or its error when recording."""
        found = await lookup()
        if found is not None and (found.error is None or self.mode != "cache"):  # cache mode never pins a fault
            self.hits += 1
            self._hit()
            if found.error is not None:
                raise found.error
            return found.value  # type: ignore[return-value]
        self.misses += 1
        if self.mode == "replay":
            raise ReplayMiss(label)
        self.upstream_calls += 1
        try:
            value = await call()
        except self.errors as err:
            # our own guards' refusals are not answers from upstream: recording them would pin a budget cap forever
            if self.mode == "record" and getattr(err, "kind", None) not in REFUSALS:
                await save(None, err)
            raise
        await save(value, None)
        return value

    def _hit(self) -> None:
        if self.counter is not None:
            self.counter.hit(self.kind, self.provider)


class CachedSearch(_ReadThrough):
    """A SearchBackend keyed by (provider, normalized query, num); `name` is the upstream's (or `provider=`)."""

    kind = "search"
    errors = SearchError

    def __init__(
        self,
        upstream: SearchBackend | None,
        store: Store,
        mode: Mode = "cache",
        ttl: CacheTTL = CacheTTL(),
        flight: SingleFlight | None = None,
        counter: HitCounter | None = None,
        *,
        provider: str | None = None,
    ):
        name = provider or (upstream.name if upstream is not None else None)
        if not name:
            raise ValueError("CachedSearch without an upstream needs provider= (the recorded provider's name)")
        super().__init__(upstream, store, mode, flight, counter, name)
        self.name = name
        self.ttl = ttl

    async def search(self, query: str, num: int = 10) -> list[SearchResult]:
        """The results for `query`; identical normalized queries share one upstream call and one entry."""
        normalized = normalize_query(query)
        key = cache_key(self.name, normalized, num)
        label = f"search {self.name} {json.dumps(normalized, ensure_ascii=False)} num={num}"

        async def lookup() -> _Found[list[SearchResult]] | None:
            raw = await self.store.get("search", key)
            if raw is None:
                return None
            entry = json.loads(raw)
            if "error" in entry:
                return _Found(error=decode_error(entry["error"], SearchError))
            return _Found([SearchResult(**item) for item in entry["results"]])

        async def call() -> list[SearchResult]:
            return await self.upstream.search(query, num)

        async def save(results: list[SearchResult] | None, error: Exception | None) -> None:
            entry = {"error": encode_error(error)} if error else {"results": [asdict(r) for r in results or []]}
            await self.store.put("search", key, _dump(entry), self._ttl(self.ttl.search))

        return list(await self._serve(key, label, lookup, call, save))


class CachedPages(_ReadThrough):
    """A PageSource whose bodies are stored once per content hash, however many URLs serve them."""

    kind = "page"
    errors = FetchError

    def __init__(
        self,
        upstream: PageSource | None,
        store: Store,
        mode: Mode = "cache",
        ttl: CacheTTL = CacheTTL(),
        flight: SingleFlight | None = None,
        counter: HitCounter | None = None,
        *,
        provider: str | None = None,
    ):
        super().__init__(upstream, store, mode, flight, counter, provider or getattr(upstream, "name", None) or "fetch")
        self.ttl = ttl

    async def fetch(self, url: str) -> Page:
        """The page at `url`; a URL entry whose body was evicted counts as a miss."""
        key = cache_key(url)

        async def lookup() -> _Found[Page] | None:
            raw = await self.store.get("url", key)
            if raw is None:
                return None
            entry = json.loads(raw)
            if "error" in entry:
                return _Found(error=decode_error(entry["error"], FetchError))
            meta = entry["page"]
            body = await self.store.get("blob", meta["hash"])
            if body is None:
                return None
            text = body.decode("utf-8", "surrogatepass")
            return _Found(Page(url=meta["url"], status=meta["status"], content_type=meta["content_type"], text=text))

        async def call() -> Page:
            return await self.upstream.fetch(url)

        async def save(page: Page | None, error: Exception | None) -> None:
            ttl = self._ttl(self.ttl.page)
            if error is not None or page is None:
                await self.store.put("url", key, _dump({"error": encode_error(error)}), ttl)
                return
            body = page.text.encode("utf-8", "surrogatepass")
            digest = _sha(body)
            await self.store.put("blob", digest, body, ttl)  # body first: a URL entry never points at nothing
            meta = {"hash": digest, "url": page.url, "status": page.status, "content_type": page.content_type}
            await self.store.put("url", key, _dump({"page": meta}), ttl)

        return await self._serve(key, f"page {url}", lookup, call, save)


class CachedReader(_ReadThrough):
    """A Reader keyed by (URL, segment hash, sub-query, reader identity, rendered prompt hash).

    The identity is the upstream's `cache_id` (LLMReader has one) or `reader_id=`; a reader with
    neither (ExtractiveReader: local and deterministic) is called straight through in every mode.
    """

    kind = "read"
    errors = ReaderError

    def __init__(
        self,
        upstream: Reader | None,
        store: Store,
        mode: Mode = "cache",
        ttl: CacheTTL = CacheTTL(),
        flight: SingleFlight | None = None,
        counter: HitCounter | None = None,
        *,
        reader_id: str | None = None,
        provider: str | None = None,
    ):
        self.reader_id: str | None = reader_id or getattr(upstream, "cache_id", None)
        if upstream is None and self.reader_id is None:
            raise ValueError("CachedReader without an upstream needs reader_id= (the recorded reader's cache_id)")
        super().__init__(upstream, store, mode, flight, counter, provider or getattr(upstream, "name", None) or "reader")
        self.ttl = ttl

    async def read(self, req: ReadRequest) -> ReadResult:
        """The reader's answer for this segment in this context."""
        reader_id = self.reader_id
        if reader_id is None:
            self.upstream_calls += 1
            return await self.upstream.read(req)
        prompt = render_reader_prompt(req)
        key = cache_key(req.url, _sha(req.segment.encode()), req.sub_query, reader_id, _sha(prompt.encode()))
        label = (
            f"read {reader_id} {req.url or '(no url)'} segment {req.page_index}/{req.total_pages} "
            f"sub_query {json.dumps(req.sub_query, ensure_ascii=False)}"
        )

        async def lookup() -> _Found[ReadResult] | None:
            raw = await self.store.get("read", key)
            if raw is None:
                return None
            entry = json.loads(raw)
            if "error" in entry:
                return _Found(error=decode_error(entry["error"], ReaderError))
            return _Found(ReadResult(**entry["result"]))

        async def call() -> ReadResult:
            return await self.upstream.read(req)

        async def save(result: ReadResult | None, error: Exception | None) -> None:
            entry = {"error": encode_error(error)} if error else {"result": asdict(result)}
            await self.store.put("read", key, _dump(entry), self._ttl(self.ttl.reader))

        return await self._serve(key, label, lookup, call, save)
