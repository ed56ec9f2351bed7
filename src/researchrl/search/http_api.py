"""The HTTP seam the hosted search APIs share: credentials from env, strict timeouts, error mapping, bounded retries.

Every failure reaches the caller as a SearchError whose `kind` says why; its text never holds the key, nor anything
shaped like one (redacted before a body is cut to an excerpt, web/redact.py):

    missing_credentials   the key or endpoint env var is unset (MissingCredentials, raised by the constructor)
    auth                  HTTP 401/403; not retried
    http_<status>         any other 4xx, not retried; 429 and 5xx once `retry.attempts` tries are spent
    timeout | connect | network
                          no response in time, no connection, a broken one; after `retry.attempts` tries
    bad_response          a 2xx body that is not JSON (a captcha wall, an empty or cut body): retried like a 5xx,
                          since the next answer may be the real one; JSON not in the provider's documented shape:
                          not retried (the same request gets the same shape)

A well-formed response with no results is an empty list, never an error and never retried.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from researchrl.search.base import MissingCredentials, SearchError
from researchrl.types import SearchResult
from researchrl.web.cache import endpoint_id
from researchrl.web.redact import excerpt, redact, register
from researchrl.web.retry import RetryableError, RetryPolicy, retry_after_seconds, with_retries
from researchrl.web.transport import ShardedTransport

MAX_IN_FLIGHT = 100  # requests in flight per client (httpx's default pool size); more callers queue fairly


def env_or(value: str | None, env_var: str, provider: str) -> str:
    """`value`, else the env var's value; fails fast with MissingCredentials naming the variable when both are empty."""
    resolved = value if value is not None else os.environ.get(env_var, "")
    if not resolved:
        raise MissingCredentials(provider, env_var)
    return resolved


class HttpSearchApi:
    """What every hosted provider client shares: an owned or injected httpx client, timeouts, mapped errors, retries."""

    name = "http"
    auth_hint = ""  # appended to auth errors when a provider knows their usual cause

    def __init__(self, base_url: str, timeout: float, retry: RetryPolicy, client: httpx.AsyncClient | None, secret: str):
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self._timeout = httpx.Timeout(timeout)  # connect, read, write and pool, each bounded
        self._secret = secret
        register(secret)  # every message, log and file of this process masks it from now on
        self._owns_client = client is None
        transport = ShardedTransport(MAX_IN_FLIGHT) if client is None else None
        self._client = client if client is not None else httpx.AsyncClient(timeout=self._timeout, transport=transport)
        # Requests wait here, not in httpx's pool: its queue is scanned per event (quadratic at thousands queued).
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    @property
    def cache_id(self) -> str:
        """Who answers, for cache keys: the provider at its endpoint (another instance or port is another web)."""
        return f"{self.name}@{endpoint_id(self.base_url)}"

    async def aclose(self) -> None:
        """Close the connection pool if this object made it; an injected client belongs to whoever passed it."""
        if self._owns_client:
            await self._client.aclose()

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str | int] | None = None,
        json: Mapping[str, Any] | None = None,
    ) -> Any:
        """One API call with bounded retries; the decoded JSON body, or SearchError."""

        async def attempt() -> Any:
            return await self._attempt(method, path, headers, params, json)

        try:
            return await with_retries(attempt, self.retry)
        except RetryableError as err:
            message = f"{err} (gave up after {self.retry.attempts} attempts)"
            raise SearchError(self.name, err.kind, self._redact(message)) from err

    async def _attempt(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        params: Mapping[str, str | int] | None,
        json: Mapping[str, Any] | None,
    ) -> Any:
        """One try: network faults, 429, 5xx and a non-JSON 2xx become RetryableError; a malformed URL (our bug) raises."""
        try:
            async with self._slots:
                response = await self._client.request(
                    method, self.base_url + path, headers=headers, params=params, json=json, timeout=self._timeout
                )
        except httpx.TimeoutException as err:
            raise RetryableError(f"no response within {self._timeout.read}s ({type(err).__name__})", "timeout") from err
        except httpx.ConnectError as err:
            raise RetryableError(self._redact(f"cannot connect: {err}"), "connect") from err
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as err:
            raise RetryableError(self._redact(f"{type(err).__name__}: {err}"), "network") from err
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            raise RetryableError(f"HTTP {status}: {self._excerpt(response)}", f"http_{status}", retry_after)
        if status in (401, 403):
            raise SearchError(self.name, "auth", f"HTTP {status}: {self._excerpt(response)}{self.auth_hint}")
        if not 200 <= status < 300:
            raise SearchError(self.name, f"http_{status}", f"HTTP {status}: {self._excerpt(response)}")
        try:
            return response.json()
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's depth
            raise RetryableError(f"body is not JSON: {self._excerpt(response) or '(empty)'}", "bad_response") from None

    def _redact(self, text: str) -> str:
        """Servers and sockets may echo what they were sent; the key must not survive into a message."""
        return redact(text, (self._secret,))

    def _excerpt(self, response: httpx.Response) -> str:
        """The start of a response body on one line, redacted before it is cut."""
        return excerpt(response.text, (self._secret,))


def extract_results(
    provider: str,
    payload: Any,
    path: tuple[str, ...],
    fields: tuple[str, str, str],
    num: int,
    clean: Callable[[str], str] = str.strip,
) -> list[SearchResult]:
    """The first `num` results at `path` with url; (title, url, snippet) read from `fields`; a missing list is []."""
    node = payload
    for key in path:
        if not isinstance(node, dict):
            raise SearchError(provider, "bad_response", f"expected an object holding {key!r}, got {type(node).__name__}")
        node = node.get(key)
        if node is None:
            return []
    if not isinstance(node, list):
        raise SearchError(provider, "bad_response", f"{'.'.join(path)} is {type(node).__name__}, not a list")
    results: list[SearchResult] = []
    for item in node:
        if len(results) == num:
            break
        if not isinstance(item, dict):
            raise SearchError(provider, "bad_response", f"a result is {type(item).__name__}, not an object")
        title, url, snippet = (_text(provider, item, field) for field in fields)
        if url:  # a provider echoing a key in its text must not put it in an observation or the cache
            results.append(SearchResult(title=redact(clean(title)), url=url.strip(), snippet=redact(clean(snippet))))
    return results


def _text(provider: str, item: dict[str, Any], field: str) -> str:
    """A result's string field; absent or null reads as empty, any other type is a malformed response."""
    value = item.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SearchError(provider, "bad_response", f"result field {field!r} is {type(value).__name__}, not a string")
    return value
