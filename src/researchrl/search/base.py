"""The one seam every search provider implements: a query in, `list[SearchResult]` out."""

from __future__ import annotations

from typing import Protocol

from researchrl.errors import EnvironmentFault
from researchrl.types import SearchResult


class SearchError(EnvironmentFault):
    """A search failed for an environment reason (`kind`: http_429, http_500, timeout, auth, bad_response, ...)."""

    def __init__(self, provider: str, kind: str, message: str):
        super().__init__(kind, f"{provider}: {kind}: {message}")
        self.provider = provider


class MissingCredentials(SearchError):
    """A provider needs an environment variable (API key or endpoint) that is unset, so no request is made."""

    def __init__(self, provider: str, env_var: str):
        super().__init__(provider, "missing_credentials", f"{env_var} is not set")
        self.env_var = env_var


class SearchBackend(Protocol):
    """Anything that answers a web query with ranked results; raises SearchError on environment faults."""

    name: str

    async def search(self, query: str, num: int = 10) -> list[SearchResult]:
        """Top `num` results for `query`, best first."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
