"""Bounded key-value stores with TTL behind one interface: memory (one process), SQLite (default), Redis (shared).

A store also keeps token buckets (`take`), so a rate limit can be shared by every process that opens
the same SQLite file or Redis server. `SingleFlight` lets concurrent identical calls share one upstream call.

Store backend failures (a locked or unwritable SQLite file, an unreachable Redis) raise `StoreError`:
they are our infrastructure's faults, not the environment's, so tools do not turn them into observations.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

from researchrl.errors import ConfigError
from researchrl.web.redact import REDACTED, register

T = TypeVar("T")


class Store(Protocol):
    """Bytes under (namespace, key) with an optional TTL; bounded, least recently used evicted first."""

    async def get(self, ns: str, key: str) -> bytes | None:
        """The value, or None when absent or expired."""
        ...

    async def put(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        """Store `value`; `ttl` seconds until it expires (None: never)."""
        ...

    async def take(self, bucket: str, rate: float, burst: float) -> float:
        """Reserve one token of a bucket refilled at `rate`/s up to `burst`; seconds to wait before using it (0: now)."""
        ...

    async def stats(self) -> StoreStats:
        """Entries and bytes held (one round trip: `open_reachable` checks a store with it)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class StoreError(Exception):
    """The store's backend failed (SQLite error, Redis unreachable or timing out, store closed)."""


@dataclass(frozen=True)
class StoreStats:
    """How full a store is: live entries and the bytes of their values."""

    entries: int
    bytes: int


def cache_key(*parts: object) -> str:
    """A stable key for any JSON-able parts (sha256 hex)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def endpoint_id(url: str) -> str:
    """A base URL as cache keys name it: scheme, host and port (explicit), path; no credentials, query or fragment."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    host = (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}"


def _check_bucket(rate: float, burst: float) -> None:
    """Refuse bucket parameters no reservation could honour."""
    if rate <= 0 or burst < 1:
        raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got rate={rate}, burst={burst}")


def reserve(tokens: float, stamp: float, now: float, rate: float, burst: float) -> tuple[float, float]:
    """Token-bucket step shared by every store: (tokens left after taking one, seconds to wait for it).

    Tokens may go negative: a caller that must wait has already reserved its token, so waiters are
    served in arrival order and never retry the reservation.
    """
    _check_bucket(rate, burst)
    tokens = min(burst, tokens + max(0.0, now - stamp) * rate) - 1.0
    return tokens, (0.0 if tokens >= 0 else -tokens / rate)


class MemoryStore:
    """In-process LRU store: for a single process, tests, and as the default when no cache file is given."""

    def __init__(self, max_entries: int = 100_000, max_bytes: int = 512 * 2**20, max_buckets: int = 10_000):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_buckets = max_buckets
        self._data: OrderedDict[tuple[str, str], tuple[bytes, float | None]] = OrderedDict()
        self._bytes = 0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def get(self, ns: str, key: str) -> bytes | None:
        """The value, refreshed as most recently used."""
        item = self._data.get((ns, key))
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.time():
            self._drop((ns, key))
            return None
        self._data.move_to_end((ns, key))
        return value

    async def put(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        """Store, then evict least recently used entries past either bound."""
        self._drop((ns, key))
        self._data[(ns, key)] = (value, None if ttl is None else time.time() + ttl)
        self._bytes += len(value)
        while len(self._data) > self.max_entries or (self._bytes > self.max_bytes and len(self._data) > 1):
            self._drop(next(iter(self._data)))

    async def take(self, bucket: str, rate: float, burst: float) -> float:
        """Token bucket in this process only; the least recently used bucket is forgotten past `max_buckets`."""
        now = time.monotonic()
        tokens, stamp = self._buckets.pop(bucket, (burst, now))
        tokens, wait = reserve(tokens, stamp, now, rate, burst)
        self._buckets[bucket] = (tokens, now)
        if len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
        return wait

    async def stats(self) -> StoreStats:
        """Entries and bytes held (expired entries count until they are next read or evicted)."""
        return StoreStats(len(self._data), self._bytes)

    async def aclose(self) -> None:
        """Nothing to release."""

    def _drop(self, slot: tuple[str, str]) -> None:
        """Forget one entry and its size."""
        item = self._data.pop(slot, None)
        if item is not None:
            self._bytes -= len(item[0])


# ---------------------------------------------------------------- choosing a store

STORE_SPECS = "None or 'memory', 'redis://host:port/db' (or rediss://, unix://), 'sqlite:///abs/path.db', or a file path"
_ENV_REF = re.compile(r"\$\{(\w+)\}")  # a password written ${NAME}: read from that env var, so configs never hold it


def open_store(spec: str | None) -> Store:
    """The store a `--cache` spec names: None/'memory' -> MemoryStore, redis URL -> RedisStore, else SQLiteStore.

    'sqlite:///abs/path.db' names an absolute path (like file:///); a plain path may be relative.
    Parent directories of a SQLite file are created. A Redis password may be written ${ENV_VAR}.
    """
    if spec is None or spec.strip() == "memory":
        return MemoryStore()
    spec = spec.strip()
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from researchrl.web.redis_store import RedisStore

        return RedisStore(_redis_url(spec))
    if spec.startswith("sqlite://"):
        path = spec.removeprefix("sqlite://")
        if not path.startswith("/") or path == "/":
            raise ConfigError(f"bad cache spec {spec!r}: sqlite URLs are sqlite:///absolute/path.db; accepted: {STORE_SPECS}")
    elif "://" in spec or not spec:
        raise ConfigError(f"bad cache spec {spec!r}; accepted: {STORE_SPECS}")
    else:
        path = spec
    file = Path(path).expanduser()
    if file.is_dir():
        raise ConfigError(f"cache {spec} is a directory: give a SQLite file, e.g. {file / 'web.sqlite'}")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the cache file {file}: {err.strerror or err}") from None
    from researchrl.web.sqlite_store import SQLiteStore

    return SQLiteStore(file)


async def open_reachable(spec: str | None) -> Store:
    """`open_store`, then one round trip: an unusable file or an unreachable Redis is one ConfigError now, not on every call."""
    try:
        store = open_store(spec)
    except StoreError as err:
        raise ConfigError(f"cannot use the cache: {err}") from None
    try:
        await store.stats()
    except StoreError as err:
        await store.aclose()
        raise ConfigError(f"cannot use the cache: {err}") from None
    return store


def _redis_url(spec: str) -> str:
    """The URL to connect to, its ${NAME} password read from the environment; the password is registered as a secret."""
    if f":{REDACTED}@" in spec:
        raise ConfigError("the cache URL's password was redacted when its config was saved: give the URL again "
                          "(--cache, or --set env.cache=...), with the password as ${ENV_VAR} to keep it out of configs")
    parts = urlsplit(spec)
    password = parts.password or ""
    ref = _ENV_REF.fullmatch(password)
    if ref:
        value = os.environ.get(ref.group(1), "")
        if not value:
            raise ConfigError(f"the cache URL's password names ${ref.group(1)}, which is not set")
        password = quote(value, safe="")
        spec = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{password}@{parts.netloc.rpartition('@')[2]}"))
    register(password, unquote(password), *parse_qs(parts.query).get("password", []))
    return spec


# ---------------------------------------------------------------- single-flight


@dataclass
class _Flight(Generic[T]):
    """One call in flight and how many callers await it."""

    task: asyncio.Future[T]
    waiters: int = 0


class SingleFlight:
    """Identical keys in flight at the same time share one call; followers get the leader's result or exception.

    The call runs as its own task, so a cancelled caller (leader or follower) does not cancel it while
    anyone else still waits; it is cancelled only when every caller has gone. The entry is removed when
    the call ends, so the map holds only calls in flight.
    """

    def __init__(self) -> None:
        self._calls: dict[str, _Flight[Any]] = {}
        self.leaders = 0
        self.joins = 0

    async def do(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """`await fn()`, or the result of the identical call already in flight."""
        flight = self._calls.get(key)
        if flight is None or flight.task.cancelled():
            flight = _Flight(asyncio.ensure_future(fn()))
            self._calls[key] = flight
            flight.task.add_done_callback(lambda task, key=key, flight=flight: self._done(key, flight))
            self.leaders += 1
        else:
            self.joins += 1
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()  # nobody is left to use the result

    def __len__(self) -> int:
        return len(self._calls)

    def _done(self, key: str, flight: _Flight[Any]) -> None:
        """Forget the finished call; mark its exception retrieved when every caller was cancelled."""
        if self._calls.get(key) is flight:
            del self._calls[key]
        if not flight.task.cancelled():
            flight.task.exception()
