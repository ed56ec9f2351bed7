"""A store and single-flight in front of an upstream of any kind (search, pages, reader): cache, record and replay.

Modes (`--web`):
    live    no cache at all: every call goes upstream
    cache   read-through with a TTL (search results 7 days, as in the paper); environment errors are not stored
    record  read-through without expiry that stores every upstream answer INCLUDING environment errors,
            so a replay reproduces the faults too
    replay  only the store answers; upstream is never called (it may be None); a miss raises ReplayMiss

Identical calls in flight at the same moment (16 rollouts of one question searching the same thing)
share one upstream call. When that call fails with a transient fault (the kind's outages: a timeout, a 5xx,
a garbage body), only its leader, whose retries it spent, gets the error: in cache mode each caller that had
joined it starts a new flight (or joins the next), at most `rejoins` times.

Entries are JSON, written by the kind's Codec (`web/kinds.py`); an error entry
keeps the exception's class, args and attributes and is raised again as that class. Page bodies are
content-addressed: namespace "url" maps a URL to {hash, final url, status, content type} and "blob" maps
the hash to the body, so one body served under many URLs is stored once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from researchrl.errors import EnvironmentFault, UserError
from researchrl.web.cache import SingleFlight, Store, cache_key
from researchrl.web.fault_record import FaultRecord
from researchrl.web.guard import REFUSALS, verdict
from researchrl.web.kinds import Codec, Layer, ToolKind

Mode = Literal["live", "cache", "record", "replay"]
MODES: tuple[Mode, ...] = ("live", "cache", "record", "replay")


class ReplayMiss(UserError):
    """Replay asked for something never recorded; deliberately not an environment error, so no tool swallows it."""

    def __init__(self, label: str):
        super().__init__(
            f"replay miss: nothing recorded for {label}; record it first (run again with --web record on the same cache)"
        )
        self.label = label


class HitCounter(Protocol):
    """Told about every call answered without an upstream call of its own (the cost ledger implements it)."""

    def hit(self, kind: str, provider: str) -> None: ...


@dataclass
class _Found:
    """What the store holds for a key: an answer or a recorded environment error."""

    value: Any = None
    error: Exception | None = None


class Cached(Layer):
    """An upstream of `kind` behind the store; it answers the kind's method (`search`, `fetch` or `read`).

    `name` is the provider the ledger counts hits under: `provider=`, else the kind's (fetch, reader), else the
    upstream's name (a search provider's).
    The key's identity is `cache_id=`, else the upstream's `cache_id` (LLMReader has one), else the kind's
    default (search: the provider; pages: the URL alone); a reader with none (ExtractiveReader: local and
    deterministic) is called straight through in every mode.

    Keys hash the codec's version, the identity and the call (web/kinds.py), so a search provider at another
    endpoint, or a reader with another model or prompt, never answers from the other's entries.

    Counters: `upstream_calls` made; `hits` and `misses` of the store lookups (one per flight);
    `joins`, calls answered by an identical call already in flight; `rejoined`, joined flights that failed
    and were tried again. The counter's `hit` is told about every store hit and every answered join
    (neither costs an upstream call).
    """

    def __init__(
        self,
        kind: ToolKind,
        upstream: Any,  # noqa: ANN401
        store: Store,
        mode: Mode = "cache",
        *,
        ttl: float | None = None,
        flight: SingleFlight | None = None,
        counter: HitCounter | None = None,
        provider: str | None = None,
        cache_id: str | None = None,
        rejoins: int = 2,
    ):
        if kind.codec is None:
            raise ValueError(f"{kind.name} answers are never stored")
        if mode not in MODES:
            raise ValueError(f"unknown web mode {mode!r}; use one of {', '.join(MODES)}")
        if upstream is None and mode != "replay":
            raise ValueError(f"caching {kind.name} needs an upstream in {mode} mode (only replay works without)")
        name = provider or kind.provider or getattr(upstream, "name", None)
        if not name:
            raise ValueError(f"caching {kind.name} without an upstream needs provider= (the recorded provider's name)")
        self.cache_id = cache_id or getattr(upstream, "cache_id", None) or kind.codec.identity(name)
        if upstream is None and self.cache_id is None:
            raise ValueError(f"caching {kind.name} without an upstream needs cache_id= (the recorded upstream's)")
        self.kind = kind
        self.codec: Codec = kind.codec
        self.upstream = upstream
        self.store = store
        self.mode = mode
        self.ttl = kind.codec.ttl if ttl is None else ttl
        self.flight = flight if flight is not None else SingleFlight()
        self.counter = counter
        self.name = name
        self.rejoins = rejoins  # new flights a caller may try after a flight it joined failed transiently
        self.hits = self.misses = self.upstream_calls = self.joins = self.rejoined = 0

    async def call(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        """The answer to this call: from the store, from an identical call in flight, or from upstream.

        A caller whose joined flight failed transiently spent none of its own tries, so it flies again (cache mode,
        at most `rejoins` times); an error reaches a caller only from a flight it led, or with its rejoins spent.
        """
        call = self.kind.args(*args, **kwargs)
        if self.mode == "live" or self.cache_id is None:
            self.upstream_calls += 1
            return await self._upstream(call)
        key = cache_key(f"v{self.codec.version}", *self.codec.key(self.cache_id, call))
        label = self.codec.label(self.cache_id, call)

        async def lead() -> Any:  # noqa: ANN401
            nonlocal led
            led = True
            return await self._lead(key, label, lambda: self._upstream(call))

        tried = 0
        while True:
            led = rejoin = False
            try:
                return await self.flight.do(f"{self.kind.name}:{key}", lead)
            except self.kind.fault as err:
                rejoin = not led and tried < self.rejoins and self.mode == "cache" and self._transient(err)
                if not rejoin:
                    raise
                self.rejoined += 1
                tried += 1
            finally:
                if not led and not rejoin:
                    self.joins += 1
                    self._hit()

    async def aclose(self) -> None:
        """Close the upstream if it can be closed (the store belongs to whoever opened it)."""
        close = getattr(self.upstream, "aclose", None)
        if close is not None:
            await close()

    def _transient(self, err: EnvironmentFault) -> bool:
        """Whether another call may answer: an upstream outage, not a refusal nor the request's own fault."""
        return verdict(err.kind, self.kind.outages) is True

    def _upstream(self, call: tuple[Any, ...]) -> Awaitable[Any]:
        return getattr(self.upstream, self.kind.method)(*call)

    async def _lead(self, key: str, label: str, upstream: Callable[[], Awaitable[Any]]) -> Any:  # noqa: ANN401
        """Store first; then upstream (not in replay), saving its answer, or its error when recording."""
        found = await self._load(key)
        if found is not None and (found.error is None or self.mode != "cache"):  # cache mode never pins a fault
            self.hits += 1
            self._hit()
            if found.error is not None:
                raise found.error
            return found.value
        self.misses += 1
        if self.mode == "replay":
            raise ReplayMiss(label)
        self.upstream_calls += 1
        try:
            value = await upstream()
        except self.kind.fault as err:
            # our own guards' refusals are not answers from upstream: recording them would pin a budget cap forever
            if self.mode == "record" and err.kind not in REFUSALS:
                await self._save(key, {"error": asdict(FaultRecord.of(err))})
            raise
        await self._save(key, {self.codec.field: await self._encode(value)})
        return value

    async def _load(self, key: str) -> _Found | None:
        """The entry under `key`; an entry whose body was evicted counts as a miss."""
        raw = await self.store.get(self.codec.namespace, key)
        if raw is None:
            return None
        entry = json.loads(raw)
        if "error" in entry:
            return _Found(error=FaultRecord(**entry["error"]).rebuild(self.kind.fault))
        data, body = entry[self.codec.field], None
        if self.codec.body is not None:
            body = await self.store.get("blob", data["hash"])
            if body is None:
                return None
        return _Found(self.codec.decode(data, body))

    async def _encode(self, value: Any) -> Any:  # noqa: ANN401
        """The answer's JSON, its body stored first (so an entry never points at nothing)."""
        data = self.codec.encode(value)
        if self.codec.body is None:
            return data
        body = self.codec.body(value)
        digest = hashlib.sha256(body).hexdigest()
        await self.store.put("blob", digest, body, self._expiry())
        return {"hash": digest, **data}

    async def _save(self, key: str, entry: dict[str, Any]) -> None:
        blob = json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str).encode()
        await self.store.put(self.codec.namespace, key, blob, self._expiry())

    def _expiry(self) -> float | None:
        """Entries expire in cache mode only: a recording is kept until it is recorded again."""
        return self.ttl if self.mode == "cache" else None

    def _hit(self) -> None:
        if self.counter is not None:
            self.counter.hit(self.kind.name, self.name)
