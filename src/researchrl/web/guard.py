"""Limits in front of one upstream of any kind (a search provider, the page fetcher, the reader), in the order a call meets them:

    circuit open?      -> refused with kind "circuit_open", nothing sent
    budget left?       -> refused with kind "budget_exhausted" (Ledger.charge), nothing sent
    rate-limit slot?   -> waits, or refused with kind "rate_limited" when the wait is too long
    the call           -> charged in the ledger; its outcome is the breaker's verdict

Refusals are the upstream's own error type (SearchError, FetchError, ReaderError), so tools report them
to the policy like any other fault. Only environment outages (timeouts, dropped connections, 429, 5xx,
garbage answers; each kind's `outages` in `web/kinds.py`) count against a breaker; an answer that is the
request's fault (404, a captcha wall, auth, an empty result list) shows the upstream is up and closes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from researchrl.web.kinds import Layer, ToolKind
from researchrl.web.ledger import BudgetExceeded, Ledger
from researchrl.web.limits import Breakers, CircuitBreaker, RateLimit, RateLimited

REFUSALS = frozenset({"circuit_open", "budget_exhausted", "rate_limited", "missing_credentials"})  # no call was made


def verdict(kind: str, outages: frozenset[str]) -> bool | None:
    """Whether an error of `kind` is an upstream outage (any 5xx included); None when no call was made."""
    if kind in REFUSALS:
        return None
    return kind in outages or kind.startswith("http_5")


class Guarded(Layer):
    """An upstream of `kind` behind its breaker, budget and rate limit; it answers the kind's method.

    `breaker` is one CircuitBreaker, or Breakers keyed by the kind's scope (pages: one per host). `provider`
    prices the calls (default: the kind's, else the upstream's name); `name` is the upstream's, else `provider`.
    The ledger counts the kind's bytes: search results, page text, the segments sent to the reader.
    """

    def __init__(
        self,
        kind: ToolKind,
        upstream: Any,  # noqa: ANN401
        *,
        rate: RateLimit | None = None,
        breaker: CircuitBreaker | Breakers | None = None,
        ledger: Ledger | None = None,
        provider: str | None = None,
    ):
        self.kind = kind
        self.upstream = upstream
        self.provider: str = provider or kind.provider or getattr(upstream, "name", None)
        self.name: str = getattr(upstream, "name", None) or self.provider
        self.cache_id: str | None = getattr(upstream, "cache_id", None)  # a cache in front keys by the upstream's identity
        self.rate = rate
        self.breaker = breaker
        self.ledger = ledger

    async def call(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        """The upstream's answer; refusals and failures are the kind's fault type."""
        call = self.kind.args(*args, **kwargs)
        breaker = self.breaker.get(self.kind.scope(call)) if isinstance(self.breaker, Breakers) else self.breaker

        def refuse(kind: str, message: str) -> Exception:
            return self.kind.blame(self.name, call, kind, message)

        answer = await self._run(lambda: getattr(self.upstream, self.kind.method)(*call), breaker, refuse)
        if self.ledger is not None:
            self.ledger.add_bytes(self.kind.name, self.provider, self.kind.sent(call, answer))
        return answer

    async def aclose(self) -> None:
        """Close the upstream."""
        await self.upstream.aclose()

    async def _run(
        self, upstream: Callable[[], Awaitable[Any]], breaker: CircuitBreaker | None, refuse: Callable[[str, str], Exception]
    ) -> Any:  # noqa: ANN401
        """`upstream()` once the breaker, the budget and the rate limit let it through; the outcome goes to the breaker."""
        if breaker is not None and not breaker.allow():
            message = f"{breaker.consecutive_failures} failures in a row; next try in {breaker.retry_in:.1f} s"
            raise refuse("circuit_open", f"{self.provider}: {message}")
        outcome: bool | None = None  # True: the upstream failed; False: it answered; None: no verdict
        try:
            await self._admit(refuse)
            try:
                answer = await upstream()
            except self.kind.fault as err:
                outcome = verdict(err.kind, self.kind.outages)
                raise
            outcome = False
            return answer
        finally:
            if breaker is not None:
                if outcome is None:
                    breaker.release()
                elif outcome:
                    breaker.record_failure()
                else:
                    breaker.record_success()

    async def _admit(self, refuse: Callable[[str, str], Exception]) -> None:
        """Budget first (so an exhausted budget never waits for a rate slot), then the rate limit, then the charge."""
        try:
            if self.ledger is not None and self.rate is not None:
                self.ledger.check(self.kind.name, self.provider)
            if self.rate is not None:
                await self.rate.acquire()
            if self.ledger is not None:
                self.ledger.charge(self.kind.name, self.provider)
        except BudgetExceeded as err:
            raise refuse("budget_exhausted", str(err)) from None
        except RateLimited as err:
            raise refuse("rate_limited", str(err)) from None
