"""A cache store that outlives its backend: while the backend fails, lookups miss, writes are skipped and token
buckets live in this process; the backend is tried again after a cooldown (growing, bounded, jittered).

A dead Redis or a locked SQLite file then costs cache hits, not episodes. It is not hidden: an outage logs one
warning line when it starts and one when it ends, and every operation the backend did not serve is counted
(`errors`: sent and failed; `skipped`: not sent during a cooldown), in the ledger too (web/store_errors, _skipped).
Only for caching: a recording (--web record/replay) is the product itself, so its store's errors stay errors.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from researchrl.web.cache import MemoryStore, Store, StoreError, StoreStats
from researchrl.web.limits import CircuitBreaker

T = TypeVar("T")
log = logging.getLogger("researchrl")


class StoreErrorCounter(Protocol):
    """Told about every store operation the backend did not serve (the cost ledger implements it)."""

    def store_error(self, skipped: bool) -> None: ...


class GuardedStore:
    """`backend` behind one circuit: its StoreErrors become misses, skipped writes and per-process token buckets.

    After a failure the backend is left alone for `cooldown` seconds, doubled after each failed trial up to
    `max_cooldown`, each drawn ±`jitter` (a fraction) so processes sharing a server do not return in step.
    Then one trial operation decides whether it is back.
    """

    def __init__(
        self,
        backend: Store,
        counter: StoreErrorCounter | None = None,
        cooldown: float = 2.0,
        max_cooldown: float = 60.0,
        jitter: float = 0.25,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not (0 < cooldown <= max_cooldown and 0 <= jitter < 1):
            raise ValueError(f"need 0 < cooldown <= max_cooldown, 0 <= jitter < 1; got {cooldown}, {max_cooldown}, {jitter}")
        self.backend = backend
        self.counter = counter
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.jitter = jitter
        self.rng = rng
        self.errors = 0  # operations sent to the backend that failed
        self.skipped = 0  # operations not sent because the backend was cooling down
        self.outages = 0  # times the backend went from working to failing
        self._circuit = CircuitBreaker(failures=1, cooldown=cooldown, clock=clock)
        self._failed_trials = 0
        self._at_outage = (0, 0)  # (errors, skipped) when the current outage began
        self._local = MemoryStore(max_entries=1)  # token buckets only, while the backend is down

    def __repr__(self) -> str:
        return f"GuardedStore({self.backend!r})"

    @property
    def down(self) -> bool:
        """The last operation sent to the backend failed: it is cooling down or awaiting its trial."""
        return self._circuit.state != "closed"

    @property
    def retry_in(self) -> float:
        """Seconds until the backend is tried again (0 when it is up or its trial is due)."""
        return self._circuit.retry_in

    async def get(self, ns: str, key: str) -> bytes | None:
        """The backend's value; a miss while it fails."""
        return await self._guard(lambda: self.backend.get(ns, key), _nothing)

    async def put(self, ns: str, key: str, value: bytes, ttl: float | None) -> None:
        """Store in the backend; skipped while it fails."""
        await self._guard(lambda: self.backend.put(ns, key, value, ttl), _nothing)

    async def take(self, bucket: str, rate: float, burst: float) -> float:
        """The backend's shared bucket; while it fails, a bucket of this process (the limit is then per process)."""
        shared, local = self.backend, self._local
        return await self._guard(lambda: shared.take(bucket, rate, burst), lambda: local.take(bucket, rate, burst))

    async def stats(self) -> StoreStats:
        """The backend's entries and bytes; its StoreError as is (a question about the backend, not a cache lookup)."""
        return await self.backend.stats()

    async def aclose(self) -> None:
        """Close the backend."""
        await self.backend.aclose()

    async def _guard(self, call: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]) -> T:
        """`call()` while the circuit lets it through; else, or when it raises StoreError, `fallback()`."""
        trial = self._circuit.state == "half_open"
        if not self._circuit.allow():
            self._count(skipped=True)
            return await fallback()
        try:
            result = await call()
        except StoreError as err:
            self._failed(err, trial)
            return await fallback()
        except BaseException:
            self._circuit.release()  # cancelled, or our bug: no verdict on the backend
            raise
        if trial:
            errors, skipped = self.errors - self._at_outage[0], self.skipped - self._at_outage[1]
            log.warning("cache store %r is back; while it was down %d operations failed and %d were skipped",
                        self.backend, errors, skipped)
        if trial or self._circuit.state == "closed":  # a slow success from before the outage does not end it
            self._circuit.record_success()
            self._failed_trials = 0
        return result

    def _failed(self, err: StoreError, trial: bool) -> None:
        """Count the failure and open the circuit for the next cooldown; the first failure of an outage is logged."""
        self._count(skipped=False)
        self._failed_trials += trial
        delay = min(self.max_cooldown, self.cooldown * 2**self._failed_trials)
        self._circuit.cooldown = delay * (1 + self.jitter * (2 * self.rng() - 1))
        if self._circuit.state == "closed":
            self.outages += 1
            self._at_outage = (self.errors - 1, self.skipped)
            log.warning("cache store failed (%s); going on without it (lookups miss, writes are skipped, rate limits "
                        "are per process), trying it again in %.1f s", err, self._circuit.cooldown)
        self._circuit.record_failure()

    def _count(self, skipped: bool) -> None:
        if skipped:
            self.skipped += 1
        else:
            self.errors += 1
        if self.counter is not None:
            self.counter.store_error(skipped)


async def _nothing() -> None:
    """What a lookup or a write amounts to without the backend."""
    return None
