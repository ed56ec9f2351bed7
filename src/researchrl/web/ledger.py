"""What the web costs: calls, cache hits, bytes and USD per kind and provider, per step and per run, with budget caps.

A guard calls `charge` before each upstream call; past a cap it raises `BudgetExceeded` and the call is
not made (nor counted). Free calls (price 0) are never refused. The trainer thread reads `metrics()`
while the event loop charges, so every method takes one lock.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from types import MappingProxyType

# USD per upstream call. Kinds: "search", "page", "read" (the reader), as the guards and caches name them.
# Keys: "kind/provider" (most specific), "provider", or "kind/*" (the kind's default).
DEFAULT_PRICES: Mapping[str, float] = MappingProxyType({
    "serper": 0.001,  # serper.dev pricing page, 2025: $50 for 50k queries, i.e. $1 per 1k at the base tier
    "brave": 0.005,  # Brave Search API, 2025: ~$5 per 1k requests on the paid web-search plans
    "tavily": 0.008,  # Tavily, 2025: a basic search is 1 credit, $0.008 per pay-as-you-go credit
    "searxng": 0.0,  # self-hosted
    "sandbox": 0.0,  # our loopback sandbox
    "local": 0.0,  # BM25 over a local corpus
    "page/*": 0.0,  # fetching a page costs bandwidth, not money
    "read/*": 0.0,  # the reader's price depends on its model and endpoint: set it under the reader's provider name
})
MAX_PAIRS = 256  # distinct (kind, provider) pairs a ledger tracks; providers come from config, never from the policy
_EPS = 1e-9  # so that ten $0.001 calls fit a $0.01 budget despite float sums


@dataclass(frozen=True)
class Prices:
    """USD per upstream call by kind and provider: DEFAULT_PRICES, then `overrides` on top."""

    overrides: Mapping[str, float] = field(default_factory=dict)
    table: Mapping[str, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for key, usd in self.overrides.items():
            if not (isinstance(usd, (int, float)) and math.isfinite(usd) and usd >= 0):
                raise ValueError(f"price of {key!r} must be a finite number >= 0, got {usd!r}")
        object.__setattr__(self, "table", MappingProxyType({**DEFAULT_PRICES, **self.overrides}))

    def of(self, kind: str, provider: str) -> float:
        """The price of one call; an unpriced provider is an error, never silently free."""
        for key in (f"{kind}/{provider}", provider, f"{kind}/*"):
            if key in self.table:
                return float(self.table[key])
        raise ValueError(f"no price for {kind} calls to {provider!r}: add {provider!r} (USD per call) to the prices")


class BudgetExceeded(Exception):
    """A paid call would take the `budget` ("step" or "run") spend past its cap; the call was not made."""

    def __init__(self, budget: str, cap: float, spent: float, price: float, kind: str, provider: str):
        super().__init__(
            f"{budget} budget of ${cap:.4f} reached: ${spent:.4f} spent, a {kind} call to {provider} costs ${price:.4f}"
        )
        self.budget = budget
        self.cap = cap
        self.spent = spent


@dataclass
class Usage:
    """Totals for one (kind, provider): upstream calls, cache hits, bytes, USD."""

    calls: int = 0
    hits: int = 0
    bytes: int = 0
    cost: float = 0.0


@dataclass
class Spend:
    """One request's paid spend against its own cap (a served request), shared by every task the request starts."""

    cap: float | None
    spent: float = 0.0


_request: ContextVar[Spend | None] = ContextVar("researchrl_request_spend", default=None)


@contextlib.contextmanager
def request_budget(cap: float | None) -> Iterator[Spend]:
    """Count the paid calls made in this block (and the tasks it starts) apart, refusing those past `cap`."""
    if cap is not None and not (math.isfinite(cap) and cap >= 0):
        raise ValueError(f"a request budget must be a finite number >= 0 or None, got {cap!r}")
    spend = Spend(cap)
    token = _request.set(spend)
    try:
        yield spend
    finally:
        _request.reset(token)


class Ledger:
    """Counts and prices every upstream call per step and per run, and refuses paid calls past a budget."""

    def __init__(self, prices: Prices | None = None, step_budget: float | None = None, run_budget: float | None = None):
        for name, cap in (("step_budget", step_budget), ("run_budget", run_budget)):
            if cap is not None and not (math.isfinite(cap) and cap >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 or None, got {cap!r}")
        self.prices = prices or Prices()
        self.step_budget = step_budget
        self.run_budget = run_budget
        self.step = 0
        self._lock = threading.Lock()
        self._step: dict[tuple[str, str], Usage] = {}
        self._run: dict[tuple[str, str], Usage] = {}
        self._refused_step = 0  # paid calls refused this step
        self._refused_run = False
        self._store_failed = self._store_skipped = 0  # cache store operations its backend did not serve this step

    def charge(self, kind: str, provider: str, bytes: int = 0) -> None:
        """Count one upstream call about to be made; past a cap, raise BudgetExceeded and count only the refusal."""
        price = self.prices.of(kind, provider)
        with self._lock:
            self._refuse_past_caps(kind, provider, price)
            for usage in self._pair(kind, provider):
                usage.calls += 1
                usage.bytes += bytes
                usage.cost += price
            request = _request.get()
            if request is not None:
                request.spent += price

    def check(self, kind: str, provider: str) -> None:
        """Raise BudgetExceeded if one call would pass a cap now, counting no call (to refuse before a rate-limit wait)."""
        price = self.prices.of(kind, provider)
        with self._lock:
            self._refuse_past_caps(kind, provider, price)

    def add_bytes(self, kind: str, provider: str, n: int) -> None:
        """Count bytes that came back from (or went to) a call already charged."""
        with self._lock:
            for usage in self._pair(kind, provider):
                usage.bytes += n

    def hit(self, kind: str, provider: str) -> None:
        """Count a call answered from the cache (free, never refused)."""
        with self._lock:
            for usage in self._pair(kind, provider):
                usage.hits += 1

    def store_error(self, skipped: bool) -> None:
        """Count a cache store operation its backend did not serve: it failed, or was `skipped` while it was down."""
        with self._lock:
            if skipped:
                self._store_skipped += 1
            else:
                self._store_failed += 1

    def start_step(self, step: int) -> None:
        """Begin training step `step`: step totals and the step budget start from zero."""
        with self._lock:
            self.step = step
            self._step.clear()
            self._refused_step = 0
            self._store_failed = self._store_skipped = 0

    @property
    def step_cost(self) -> float:
        """USD spent in this step."""
        with self._lock:
            return _cost(self._step)

    @property
    def run_cost(self) -> float:
        """USD spent in this run (resumes included)."""
        with self._lock:
            return _cost(self._run)

    @property
    def step_exhausted(self) -> bool:
        """A paid call was refused this step, or the step spend reached its cap."""
        with self._lock:
            return self._refused_step > 0 or _reached(_cost(self._step), self.step_budget)

    @property
    def run_exhausted(self) -> bool:
        """A paid call was refused by the run budget, or the run spend reached its cap: time to stop the run."""
        with self._lock:
            return self._refused_run or _reached(_cost(self._run), self.run_budget)

    def usage(self, kind: str, provider: str, run: bool = False) -> Usage:
        """A copy of one pair's totals for this step (or the run)."""
        with self._lock:
            found = (self._run if run else self._step).get((kind, provider))
            return Usage(**asdict(found)) if found else Usage()

    def metrics(self) -> dict[str, float]:
        """Flat step totals for training logs (web/calls/<kind>/<provider>, web/bytes/<kind>, ...) and run cost."""
        with self._lock:
            out: dict[str, float] = {"web/cost_usd": _cost(self._step), "web/cost_usd_run": _cost(self._run)}
            calls = hits = 0
            for (kind, provider), usage in sorted(self._step.items()):
                out[f"web/calls/{kind}/{provider}"] = float(usage.calls)
                out[f"web/hits/{kind}/{provider}"] = float(usage.hits)
                out[f"web/bytes/{kind}"] = out.get(f"web/bytes/{kind}", 0.0) + usage.bytes
                calls, hits = calls + usage.calls, hits + usage.hits
            out["web/cache_hit_rate"] = hits / (calls + hits) if calls + hits else 0.0
            out["web/budget_refusals"] = float(self._refused_step)
            out["web/store_errors"] = float(self._store_failed)
            out["web/store_skipped"] = float(self._store_skipped)
            return out

    def to_json(self) -> str:
        """The run totals and the step number, for a checkpoint."""
        with self._lock:
            run = [{"kind": k, "provider": p, **asdict(u)} for (k, p), u in sorted(self._run.items())]
            return json.dumps({"version": 1, "step": self.step, "run": run})

    @classmethod
    def from_json(
        cls, text: str, prices: Prices | None = None, step_budget: float | None = None, run_budget: float | None = None
    ) -> Ledger:
        """A ledger resuming a checkpoint's run totals; prices and budgets come from the (possibly new) config."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("not a version 1 ledger checkpoint")
        ledger = cls(prices, step_budget, run_budget)
        ledger.step = int(data["step"])
        for row in data["run"]:
            ledger._run[(str(row["kind"]), str(row["provider"]))] = Usage(
                calls=int(row["calls"]), hits=int(row["hits"]), bytes=int(row["bytes"]), cost=float(row["cost"])
            )
        return ledger

    def _refuse_past_caps(self, kind: str, provider: str, price: float) -> None:
        """Raise BudgetExceeded if `price` more would pass the step or run cap (caller holds the lock)."""
        if price <= 0:
            return
        request = _request.get()
        if request is not None and request.cap is not None and request.spent + price > request.cap + _EPS:
            raise BudgetExceeded("request", request.cap, request.spent, price, kind, provider)
        for budget, cap, totals in (("step", self.step_budget, self._step), ("run", self.run_budget, self._run)):
            spent = _cost(totals)
            if cap is not None and spent + price > cap + _EPS:
                self._refused_step += 1
                self._refused_run = self._refused_run or budget == "run"
                raise BudgetExceeded(budget, cap, spent, price, kind, provider)

    def _pair(self, kind: str, provider: str) -> tuple[Usage, Usage]:
        """The step and run totals of one pair, created on first use (caller holds the lock)."""
        key = (kind, provider)
        if key not in self._run and len(self._run) >= MAX_PAIRS:
            raise ValueError(f"more than {MAX_PAIRS} (kind, provider) pairs: provider names must come from config")
        return self._step.setdefault(key, Usage()), self._run.setdefault(key, Usage())


def _cost(totals: Mapping[tuple[str, str], Usage]) -> float:
    """USD across all pairs."""
    return sum(u.cost for u in totals.values())


def _reached(spent: float, cap: float | None) -> bool:
    """Whether a spend has reached a cap (never, without one)."""
    return cap is not None and spent >= cap - _EPS
