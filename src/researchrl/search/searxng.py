"""A SearXNG instance (self-hosted metasearch) through its JSON output; no key, but the endpoint is required."""

from __future__ import annotations

import base64

import httpx

from researchrl.search.base import SearchError
from researchrl.search.http_api import HttpSearchApi, env_or, extract_results
from researchrl.types import SearchResult
from researchrl.web.redact import register
from researchrl.web.retry import RetryPolicy


class SearxngSearch(HttpSearchApi):
    """GET {base}/search?format=json; results[].content is the snippet. Endpoint from SEARXNG_URL unless given."""

    name = "searxng"
    auth_hint = " (a stock settings.yml serves only HTML: add 'json' to search.formats)"

    def __init__(
        self,
        base_url: str | None = None,
        timeout: float = 15.0,
        retry: RetryPolicy = RetryPolicy(),
        client: httpx.AsyncClient | None = None,
    ):
        # An instance behind basic auth is given as https://user:password@host; the password moves to a header so
        # it never sits in a URL that httpx logs or an error repeats.
        url = httpx.URL(env_or(base_url, "SEARXNG_URL", self.name))
        super().__init__(str(url.copy_with(userinfo=b"")), timeout, retry, client, secret=url.password)
        self._headers = {"Accept": "application/json"}
        if url.userinfo:
            token = base64.b64encode(f"{url.username}:{url.password}".encode()).decode()
            register(token)  # a server echoing the Authorization header echoes this, not the password
            self._headers["Authorization"] = f"Basic {token}"

    async def search(self, query: str, num: int = 10) -> list[SearchResult]:
        """Top `num` results of the first page; none while engines report failures is an error, not an empty answer."""
        params = {"q": query, "format": "json"}
        payload = await self.request_json("GET", "/search", headers=self._headers, params=params)
        results = extract_results(self.name, payload, ("results",), ("title", "url", "content"), num)
        unresponsive = payload.get("unresponsive_engines") if isinstance(payload, dict) else None
        if not results and unresponsive:
            raise SearchError(self.name, "engines_unresponsive", f"no results; unresponsive engines: {unresponsive}"[:300])
        return results
