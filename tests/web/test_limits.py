"""RateLimit over a MemoryStore bucket, CircuitBreaker on an injected clock, and the bounded Breakers map."""

from __future__ import annotations

import asyncio
import time

import pytest

from researchrl.web.cache import MemoryStore
from researchrl.web.limits import Breakers, CircuitBreaker, RateLimit, RateLimited


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- RateLimit


async def test_calls_are_spaced_one_over_qps_after_the_burst():
    limit = RateLimit(MemoryStore(), "serper", qps=50, burst=1)
    start = time.monotonic()
    for _ in range(11):
        await limit.acquire()
    elapsed = time.monotonic() - start
    assert 0.19 <= elapsed < 0.6  # 10 waits of 20 ms after the first token


async def test_limiters_on_one_store_share_the_bucket():
    store = MemoryStore()
    a, b = RateLimit(store, "brave", qps=20, burst=1), RateLimit(store, "brave", qps=20, burst=1)
    other = RateLimit(store, "tavily", qps=20, burst=1)
    start = time.monotonic()
    for _ in range(3):
        await a.acquire()
        await b.acquire()
    shared = time.monotonic() - start
    start = time.monotonic()
    await other.acquire()  # a different bucket has its own full token
    assert shared >= 0.24  # 6 calls of one 20 qps bucket: 5 waits of 50 ms
    assert time.monotonic() - start < 0.04


async def test_a_wait_past_max_wait_is_refused_at_once():
    limit = RateLimit(MemoryStore(), "serper", qps=10, burst=1, max_wait=0.15)
    start = time.monotonic()
    outcomes = await asyncio.gather(*(limit.acquire() for _ in range(3)), return_exceptions=True)
    assert outcomes[:2] == [None, None]  # waits 0 and 0.1 s
    refused = outcomes[2]
    assert isinstance(refused, RateLimited)
    assert refused.bucket == "serper" and refused.wait == pytest.approx(0.2, abs=0.02)
    assert "serper" in str(refused) and "0.15" in str(refused)
    assert time.monotonic() - start < 0.15  # the refused caller did not sleep its 0.2 s


async def test_certain_refusals_reserve_nothing_so_the_bucket_recovers():
    limit = RateLimit(MemoryStore(), "serper", qps=10, burst=1, max_wait=0.15)
    outcomes = await asyncio.gather(*(limit.acquire() for _ in range(3)), return_exceptions=True)
    assert isinstance(outcomes[2], RateLimited)
    for _ in range(20):  # an overloaded caller keeps asking; none of these may deepen the debt
        with pytest.raises(RateLimited):
            await limit.acquire()
    await asyncio.sleep(0.25)
    start = time.monotonic()
    await limit.acquire()  # had the 20 refusals reserved tokens, this would wait ~2 s and be refused
    assert time.monotonic() - start <= 0.15


def test_rate_limit_rejects_meaningless_settings():
    with pytest.raises(ValueError):
        RateLimit(MemoryStore(), "b", qps=0)
    with pytest.raises(ValueError):
        RateLimit(MemoryStore(), "b", qps=1, max_wait=-1)
    with pytest.raises(ValueError):
        RateLimit(MemoryStore(), "b", qps=1, burst=0.5)
    assert RateLimit(MemoryStore(), "b", qps=0.2).burst == 1.0
    assert RateLimit(MemoryStore(), "b", qps=8).burst == 8.0


# ---------------------------------------------------------------- CircuitBreaker


def test_opens_after_n_consecutive_failures_only():
    breaker = CircuitBreaker(failures=3, cooldown=30, clock=Clock())
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()  # a success in between resets the count
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.retry_in == 30.0


def test_half_open_lets_exactly_one_trial_through_and_a_success_closes():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=30, clock=clock)
    breaker.record_failure()
    clock.now += 29.9
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.allow()
    assert not breaker.allow() and not breaker.allow()  # the trial is still running
    breaker.record_success()
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(3))


def test_a_failed_trial_reopens_for_a_full_cooldown():
    clock = Clock()
    breaker = CircuitBreaker(failures=5, cooldown=10, clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure()  # one failure is enough while half-open
    assert breaker.state == "open"
    clock.now += 9.5
    assert not breaker.allow()
    clock.now += 0.5
    assert breaker.allow()


def test_a_released_trial_frees_the_slot_without_a_verdict():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=1, clock=clock)
    breaker.record_failure()
    clock.now += 1
    assert breaker.allow()
    breaker.release()  # e.g. the budget refused the call before it was sent
    assert breaker.state == "half_open"
    assert breaker.allow()


def test_breaker_rejects_meaningless_settings():
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0)
    with pytest.raises(ValueError):
        CircuitBreaker(cooldown=-1)


# ---------------------------------------------------------------- Breakers


def test_one_breaker_per_key_with_shared_settings():
    clock = Clock()
    breakers = Breakers(failures=2, cooldown=5, clock=clock)
    a = breakers.get("a.example")
    assert breakers.get("a.example") is a
    a.record_failure()
    a.record_failure()
    assert a.state == "open" and breakers.get("b.example").state == "closed"
    clock.now += 5
    assert a.state == "half_open"


def test_idle_breakers_are_forgotten_first_and_the_map_stays_bounded():
    breakers = Breakers(max_keys=3, failures=1)
    breakers.get("down.example").record_failure()  # open: worth remembering
    breakers.get("b.example")
    breakers.get("c.example")
    breakers.get("d.example")  # over the bound: b, the least recently used idle key, goes
    assert len(breakers) == 3
    assert breakers.get("down.example").state == "open"
    for host in ("e.example", "f.example", "g.example"):
        breakers.get(host).record_failure()
    assert len(breakers) == 3  # every breaker holds state: the least recently used goes anyway
    assert breakers.get("g.example").state == "open"
    assert breakers.get("down.example").state == "closed"  # forgotten, hence a fresh breaker
