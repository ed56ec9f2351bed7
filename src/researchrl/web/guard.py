"""Limits in front of one upstream (a search provider, the page fetcher, the reader), in the order a call meets them:

    circuit open?      -> refused with kind "circuit_open", nothing sent
    budget left?       -> refused with kind "budget_exhausted" (Ledger.charge), nothing sent
    rate-limit slot?   -> waits, or refused with kind "rate_limited" when the wait is too long
    the call           -> charged in the ledger; its outcome is the breaker's verdict

Refusals are the upstream's own error type (SearchError, FetchError, ReaderError), so tools report them
to the policy like any other fault. Only environment outages (timeouts, dropped connections, 429, 5xx,
garbage answers) count against a breaker; an answer that is the request's fault (404, a captcha wall,
auth, an empty result list) shows the upstream is up and closes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from researchrl.search.base import SearchBackend, SearchError
from researchrl.tools.browse import PageSource
from researchrl.tools.reader import Reader, ReaderError, ReadRequest, ReadResult
from researchrl.types import Page, SearchResult
from researchrl.web.errors import FetchError
from researchrl.web.ledger import BudgetExceeded, Ledger
from researchrl.web.limits import Breakers, CircuitBreaker, RateLimit, RateLimited

T = TypeVar("T")

REFUSALS = frozenset({"circuit_open", "budget_exhausted", "rate_limited", "missing_credentials"})  # no call was made
SEARCH_OUTAGES = frozenset({"timeout", "connect", "network", "http_429", "bad_response", "engines_unresponsive"})
PAGE_OUTAGES = frozenset({"timeout", "connect", "network", "dns", "incomplete_body", "http_429"})
READER_OUTAGES = frozenset({"timeout", "connect", "network", "http_429", "bad_response"})


def verdict(kind: str, outages: frozenset[str]) -> bool | None:
    """Whether an error of `kind` is an upstream outage (any 5xx included); None when no call was made."""
    if kind in REFUSALS:
        return None
    return kind in outages or kind.startswith("http_5")


class Gate:
    """Budget and rate checks for one (kind, provider), and the circuit-breaker bookkeeping around a call."""

    def __init__(self, kind: str, provider: str, rate: RateLimit | None, ledger: Ledger | None):
        self.kind = kind
        self.provider = provider
        self.rate = rate
        self.ledger = ledger

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        breaker: CircuitBreaker | None,
        failed: Callable[[Exception], bool | None],
        refuse: Callable[[str, str], Exception],
    ) -> T:
        """`call()` once the breaker, the budget and the rate limit let it through; `failed(err)` judges its errors."""
        if breaker is not None and not breaker.allow():
            message = f"{breaker.consecutive_failures} failures in a row; next try in {breaker.retry_in:.1f} s"
            raise refuse("circuit_open", f"{self.provider}: {message}")
        outcome: bool | None = None  # True: the upstream failed; False: it answered; None: no verdict
        try:
            await self._admit(refuse)
            try:
                result = await call()
            except Exception as err:
                outcome = failed(err)
                raise
            outcome = False
            return result
        finally:
            if breaker is not None:
                if outcome is None:
                    breaker.release()
                elif outcome:
                    breaker.record_failure()
                else:
                    breaker.record_success()

    def add_bytes(self, n: int) -> None:
        """Count bytes of a call already charged."""
        if self.ledger is not None:
            self.ledger.add_bytes(self.kind, self.provider, n)

    async def _admit(self, refuse: Callable[[str, str], Exception]) -> None:
        """Budget first (so an exhausted budget never waits for a rate slot), then the rate limit, then the charge."""
        try:
            if self.ledger is not None and self.rate is not None:
                self.ledger.check(self.kind, self.provider)
            if self.rate is not None:
                await self.rate.acquire()
            if self.ledger is not None:
                self.ledger.charge(self.kind, self.provider)
        except BudgetExceeded as err:
            raise refuse("budget_exhausted", str(err)) from None
        except RateLimited as err:
            raise refuse("rate_limited", str(err)) from None


class GuardedSearch:
    """A search provider behind its breaker, budget and rate limit; `provider` prices it (default: its name)."""

    def __init__(
        self,
        upstream: SearchBackend,
        rate: RateLimit | None = None,
        breaker: CircuitBreaker | None = None,
        ledger: Ledger | None = None,
        provider: str | None = None,
    ):
        self.upstream = upstream
        self.name = upstream.name
        self.breaker = breaker
        self._gate = Gate("search", provider or upstream.name, rate, ledger)

    async def search(self, query: str, num: int = 10) -> list[SearchResult]:
        """The upstream's results; refusals and failures are SearchError."""
        results = await self._gate.run(lambda: self.upstream.search(query, num), self.breaker, _search_failed, self._refuse)
        self._gate.add_bytes(sum(len(f"{r.title}{r.url}{r.snippet}".encode()) for r in results))
        return results

    async def aclose(self) -> None:
        """Close the upstream."""
        await self.upstream.aclose()

    def _refuse(self, kind: str, message: str) -> SearchError:
        return SearchError(self.name, kind, message)


class ClosablePages(PageSource, Protocol):
    """A page source that holds connections."""

    async def aclose(self) -> None: ...


class GuardedPages:
    """The page fetcher behind one breaker per host and the ledger (which counts page bytes)."""

    def __init__(
        self, upstream: ClosablePages, breakers: Breakers | None = None, ledger: Ledger | None = None, provider: str = "fetch"
    ):
        self.upstream = upstream
        self.name = provider
        self.breakers = breakers
        self._gate = Gate("page", provider, None, ledger)

    async def fetch(self, url: str) -> Page:
        """The page; refusals and failures are FetchError. A host's breaker trips only on its outages."""
        breaker = self.breakers.get(urlsplit(url).hostname or "") if self.breakers is not None else None
        page = await self._gate.run(
            lambda: self.upstream.fetch(url), breaker, _page_failed, lambda kind, message: FetchError(url, kind, message)
        )
        self._gate.add_bytes(len(page.text.encode()))
        return page

    async def aclose(self) -> None:
        """Close the upstream."""
        await self.upstream.aclose()


class ClosableReader(Reader, Protocol):
    """A reader that holds connections (LLMReader)."""

    async def aclose(self) -> None: ...


class GuardedReader:
    """The paid reader behind its breaker, budget and rate limit; bytes counted are the segments sent."""

    def __init__(
        self,
        upstream: ClosableReader,
        rate: RateLimit | None = None,
        breaker: CircuitBreaker | None = None,
        ledger: Ledger | None = None,
        provider: str = "reader",
    ):
        self.upstream = upstream
        self.name = provider
        self.breaker = breaker
        self._gate = Gate("read", provider, rate, ledger)

    async def read(self, req: ReadRequest) -> ReadResult:
        """The upstream's reading; refusals and failures are ReaderError."""
        result = await self._gate.run(lambda: self.upstream.read(req), self.breaker, _reader_failed, ReaderError)
        self._gate.add_bytes(len(req.segment.encode()))
        return result

    async def aclose(self) -> None:
        """Close the upstream."""
        await self.upstream.aclose()


def _search_failed(err: Exception) -> bool | None:
    return verdict(err.kind, SEARCH_OUTAGES) if isinstance(err, SearchError) else None


def _page_failed(err: Exception) -> bool | None:
    return verdict(err.kind, PAGE_OUTAGES) if isinstance(err, FetchError) else None


def _reader_failed(err: Exception) -> bool | None:
    return verdict(err.kind, READER_OUTAGES) if isinstance(err, ReaderError) else None
