"""Protecting an upstream (and our bill) from ourselves: token-bucket rate limits and circuit breakers.

- `RateLimit`: at most `qps` calls per second (bursts of `burst`) through a `Store` bucket, so every
  process sharing the store shares the limit; a wait longer than `max_wait` raises `RateLimited`.
- `CircuitBreaker`: after `failures` consecutive environment failures an upstream is left alone for
  `cooldown` seconds, then one trial call decides whether it is back.
- `Breakers`: one breaker per key (a provider, a host), bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from researchrl.web.cache import Store

BreakerState = Literal["closed", "open", "half_open"]


class RateLimited(Exception):
    """A call would have had to wait `wait` seconds for a token of `bucket`, more than the limit allows."""

    def __init__(self, bucket: str, wait: float, max_wait: float):
        super().__init__(f"rate limit {bucket!r}: next slot in {wait:.2f} s, more than the {max_wait:g} s allowed")
        self.bucket = bucket
        self.wait = wait


class RateLimit:
    """A token bucket of `qps` tokens/s holding at most `burst` (default: one second's worth, at least 1).

    A reservation cannot be handed back to the store, so a refused caller still holds its slot. To keep
    refusals from piling up debt under overload, calls that are certain to be refused (the bucket seen
    by the last refusal has not refilled enough yet) are refused here without reserving anything.
    """

    def __init__(self, store: Store, bucket: str, qps: float, burst: float | None = None, max_wait: float = 60.0):
        burst = burst if burst is not None else max(1.0, qps)
        if qps <= 0 or burst < 1 or max_wait < 0:
            raise ValueError(f"a rate limit needs qps > 0, burst >= 1, max_wait >= 0; got {qps}, {burst}, {max_wait}")
        self.store = store
        self.bucket = bucket
        self.qps = qps
        self.burst = burst
        self.max_wait = max_wait
        self._free_after = 0.0  # lower bound, from the last refusal, on when a new reservation could be used

    async def acquire(self) -> None:
        """Wait for a token; raises RateLimited rather than wait more than `max_wait`."""
        now = time.monotonic()
        if self._free_after - now > self.max_wait:
            raise RateLimited(self.bucket, self._free_after - now, self.max_wait)
        wait = await self.store.take(self.bucket, self.qps, self.burst)
        if wait > self.max_wait:
            # The refused token stays reserved, so the next one is usable 1/qps after it at the earliest.
            self._free_after = now + wait + 1.0 / self.qps
            raise RateLimited(self.bucket, wait, self.max_wait)
        if wait > 0:
            await asyncio.sleep(wait)


class CircuitBreaker:
    """closed -> open after `failures` consecutive failures -> half-open after `cooldown` -> one trial call.

    Every `allow()` that returns True must be answered by `record_success()`, `record_failure()`, or
    `release()` (the call was not made after all), or a half-open breaker keeps waiting for its trial.
    """

    def __init__(self, failures: int = 5, cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic):
        if failures < 1 or cooldown < 0:
            raise ValueError(f"a breaker needs failures >= 1 and cooldown >= 0, got {failures}, {cooldown}")
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self.consecutive_failures = 0
        self._opened_at: float | None = None  # None while closed
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        """closed (calls pass), open (calls refused), or half_open (the cooldown is over: one trial call may pass)."""
        if self._opened_at is None:
            return "closed"
        return "half_open" if self.retry_in == 0.0 else "open"

    @property
    def idle(self) -> bool:
        """Closed with no failure counted: nothing to remember."""
        return self._opened_at is None and self.consecutive_failures == 0

    @property
    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when closed or half-open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self.clock())

    def allow(self) -> bool:
        """Whether a call may go upstream now; in half-open, True for exactly one caller until it reports back."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._trial_running:
            return False
        self._trial_running = True
        return True

    def record_success(self) -> None:
        """The upstream answered: close the breaker and forget past failures."""
        self.consecutive_failures = 0
        self._opened_at = None
        self._trial_running = False

    def record_failure(self) -> None:
        """The upstream failed: count it; the `failures`-th in a row, or a failed trial, opens for `cooldown`."""
        self.consecutive_failures += 1
        if self._trial_running or self.consecutive_failures >= self.failures:
            self._opened_at = self.clock()
        self._trial_running = False

    def release(self) -> None:
        """An allowed call was not made (refused by a budget or rate limit, cancelled): no verdict, free the trial."""
        self._trial_running = False


class Breakers:
    """One CircuitBreaker per key, created on first use; past `max_keys`, least recently used idle ones are forgotten.

    Forgetting an idle breaker loses nothing; when every breaker holds state, the least recently used
    one goes anyway (the map stays bounded).
    """

    def __init__(self, max_keys: int = 1024, **breaker_kwargs: object):
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.max_keys = max_keys
        self._kwargs = breaker_kwargs
        self._breakers: OrderedDict[str, CircuitBreaker] = OrderedDict()

    def __len__(self) -> int:
        return len(self._breakers)

    def get(self, key: str) -> CircuitBreaker:
        """The breaker for `key`, now the most recently used."""
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(**self._kwargs)  # type: ignore[arg-type]
            self._make_room()
            self._breakers[key] = breaker
        self._breakers.move_to_end(key)
        return breaker

    def _make_room(self) -> None:
        """Before adding a key: drop least recently used breakers, idle ones first, down to `max_keys - 1`."""
        excess = len(self._breakers) + 1 - self.max_keys
        if excess <= 0:
            return
        for key in sorted(self._breakers, key=lambda k: not self._breakers[k].idle)[:excess]:  # stable: LRU first
            del self._breakers[key]
