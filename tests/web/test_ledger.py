"""The ledger: prices, per-step and per-run totals, budget caps, checkpoint round trip, and concurrent use."""

from __future__ import annotations

import sys
import threading

import pytest

from researchrl.web.ledger import BudgetExceeded, Ledger, Prices, Usage


def test_default_prices_and_overrides():
    prices = Prices()
    assert prices.of("search", "serper") == 0.001
    assert prices.of("search", "brave") == 0.005
    assert prices.of("search", "tavily") == 0.008
    assert prices.of("search", "searxng") == prices.of("search", "sandbox") == 0.0
    assert prices.of("page", "fetch") == 0.0 and prices.of("read", "reader:qwen-plus") == 0.0
    custom = Prices({"serper": 0.0003, "reader:qwen-plus": 0.002, "search/brave": 0.004})
    assert custom.of("search", "serper") == 0.0003 and custom.of("search", "brave") == 0.004
    assert custom.of("read", "reader:qwen-plus") == 0.002 and custom.of("read", "reader:other") == 0.0


def test_an_unpriced_provider_is_an_error_not_free():
    with pytest.raises(ValueError, match="bing"):
        Prices().of("search", "bing")
    with pytest.raises(ValueError):
        Prices({"serper": -1.0})
    with pytest.raises(ValueError):
        Prices({"serper": float("nan")})


def test_charges_count_calls_bytes_and_cost_per_pair():
    ledger = Ledger()
    for _ in range(3):
        ledger.charge("search", "serper")
    ledger.charge("search", "brave", bytes=10)
    ledger.charge("page", "fetch")
    ledger.add_bytes("page", "fetch", 2048)
    ledger.hit("search", "serper")
    assert ledger.usage("search", "serper") == Usage(calls=3, hits=1, bytes=0, cost=pytest.approx(0.003))
    assert ledger.usage("search", "brave") == Usage(calls=1, hits=0, bytes=10, cost=0.005)
    assert ledger.step_cost == pytest.approx(0.008) and ledger.run_cost == pytest.approx(0.008)
    metrics = ledger.metrics()
    assert metrics["web/cost_usd"] == pytest.approx(0.008)
    assert metrics["web/calls/search/serper"] == 3.0
    assert metrics["web/hits/search/serper"] == 1.0
    assert metrics["web/calls/page/fetch"] == 1.0
    assert metrics["web/bytes/page"] == 2048.0 and metrics["web/bytes/search"] == 10.0
    assert metrics["web/cache_hit_rate"] == pytest.approx(1 / 6)
    assert all(isinstance(v, float) for v in metrics.values())


def test_step_budget_refuses_the_call_that_would_pass_it_and_counts_nothing():
    ledger = Ledger(step_budget=0.003)
    for _ in range(3):  # 3 x $0.001 lands exactly on the cap: allowed despite float sums
        ledger.charge("search", "serper")
    assert ledger.step_exhausted and not ledger.run_exhausted
    with pytest.raises(BudgetExceeded) as caught:
        ledger.charge("search", "serper")
    assert caught.value.budget == "step" and caught.value.cap == 0.003
    assert "step budget of $0.0030" in str(caught.value) and "$0.0030 spent" in str(caught.value)
    assert ledger.usage("search", "serper").calls == 3
    ledger.charge("page", "fetch")  # free calls are never refused
    ledger.hit("search", "serper")
    assert ledger.metrics()["web/budget_refusals"] == 1.0
    ledger.start_step(1)
    assert not ledger.step_exhausted and ledger.step_cost == 0.0 and ledger.run_cost == pytest.approx(0.003)
    ledger.charge("search", "serper")
    assert ledger.metrics()["web/calls/search/serper"] == 1.0


def test_run_budget_spans_steps_and_check_counts_nothing():
    ledger = Ledger(step_budget=0.01, run_budget=0.012)
    ledger.charge("search", "brave")
    ledger.start_step(1)
    ledger.charge("search", "brave")
    ledger.check("search", "serper")  # $0.011 would still fit
    with pytest.raises(BudgetExceeded) as caught:
        ledger.check("search", "brave")
    assert caught.value.budget == "run" and caught.value.spent == pytest.approx(0.010)
    assert ledger.run_exhausted and ledger.usage("search", "brave", run=True).calls == 2
    with pytest.raises(ValueError):
        Ledger(run_budget=-1.0)


def test_json_round_trip_keeps_run_totals_and_takes_new_budgets():
    ledger = Ledger(Prices({"reader:qwen": 0.002}), run_budget=1.0)
    ledger.start_step(7)
    ledger.charge("search", "serper")
    ledger.charge("read", "reader:qwen", bytes=500)
    ledger.hit("page", "fetch")
    restored = Ledger.from_json(ledger.to_json(), Prices({"reader:qwen": 0.002}), run_budget=0.0035)
    assert restored.step == 7
    assert restored.run_cost == pytest.approx(0.003) and restored.step_cost == 0.0
    for kind, provider in (("search", "serper"), ("read", "reader:qwen"), ("page", "fetch")):
        assert restored.usage(kind, provider, run=True) == ledger.usage(kind, provider, run=True)
    with pytest.raises(BudgetExceeded):  # the restored spend counts against the new run cap
        restored.charge("read", "reader:qwen")
    assert Ledger.from_json(restored.to_json()).to_json() == restored.to_json()
    with pytest.raises(ValueError):
        Ledger.from_json('{"version": 2}')


def test_concurrent_charges_never_pass_the_cap_while_metrics_are_read():
    ledger = Ledger(run_budget=1.0)  # room for exactly 1000 serper calls
    accepted = [0] * 8
    refused = [0] * 8
    readings: list[float] = []
    done = threading.Event()

    def charge(i: int) -> None:
        for _ in range(250):
            try:
                ledger.charge("search", "serper", bytes=3)
                accepted[i] += 1
            except BudgetExceeded:
                refused[i] += 1
            ledger.hit("page", "fetch")

    def read() -> None:
        while not done.is_set():
            readings.append(ledger.metrics()["web/cost_usd_run"])

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, so an unlocked check-then-add would race
    try:
        reader = threading.Thread(target=read)
        reader.start()
        workers = [threading.Thread(target=charge, args=(i,)) for i in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        done.set()
        reader.join()
    finally:
        sys.setswitchinterval(interval)
    assert sum(accepted) == 1000 and sum(refused) == 1000
    usage = ledger.usage("search", "serper", run=True)
    assert usage.calls == 1000 and usage.bytes == 3000 and usage.cost == pytest.approx(1.0)
    assert ledger.usage("page", "fetch").hits == 2000
    assert readings == sorted(readings) and max(readings) <= 1.0 + 1e-9
