"""Several search providers in order of preference: when one fails for an environment reason, ask the next."""

from __future__ import annotations

import asyncio

from researchrl.search.base import SearchBackend, SearchError
from researchrl.types import SearchResult

STOP_KINDS = frozenset({"budget_exhausted"})  # failures that must not spend money at the next provider


class FailoverSearch:
    """Tries each backend in order; any SearchError moves on, except a spent budget, which stops the search.

    An empty result list is an answer, not a failure. When every backend fails, the SearchError raised
    has the last failure's kind and lists each provider's failure. `served_by` counts answers per provider.
    """

    def __init__(self, backends: list[SearchBackend]):
        if not backends:
            raise ValueError("failover needs at least one search backend")
        self.backends = list(backends)
        self.name = "failover(" + ">".join(b.name for b in self.backends) + ")"
        self.served_by: dict[str, int] = dict.fromkeys((b.name for b in self.backends), 0)

    async def search(self, query: str, num: int = 10) -> list[SearchResult]:
        """The first answer, in backend order."""
        failures: list[SearchError] = []
        for backend in self.backends:
            try:
                results = await backend.search(query, num)
            except SearchError as err:
                if err.kind in STOP_KINDS:
                    raise
                failures.append(err)
                continue
            self.served_by[backend.name] += 1
            return results
        raise SearchError(self.name, failures[-1].kind, "every provider failed: " + " | ".join(map(str, failures)))

    async def aclose(self) -> None:
        """Close every backend, even when one of them fails to close; the first such error is raised after."""
        outcomes = await asyncio.gather(*(b.aclose() for b in self.backends), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
