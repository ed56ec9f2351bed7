"""Fetch one web page for the browsing agent: guarded, bounded, retried only when a retry can help.

Every failure is a FetchError whose `kind` the browse tool reports to the policy:

    ssrf_refused        the URL, or any redirect hop, points into this machine/network (web/ssrf.py)
    dns                 the host does not resolve
    timeout             connect/read timeout, or the whole-fetch deadline passed      (retried)
    connect             connection refused or reset                                    (retried)
    incomplete_body     the server closed the connection mid-response                  (retried)
    network             any other transport failure (proxy, protocol)
    http_429, http_5xx  overloaded or failing server; 429 honours Retry-After          (retried)
    http_4xx            any other client error (404, 403, ...)                         (never retried)
    too_many_redirects, bad_redirect
    too_large           the body passed `max_bytes` (reading stops there)
    unsupported_content_type   not HTML/XHTML/text (PDF, images, ...)
    bad_encoding        the body's Content-Encoding could not be decoded
    captcha             an anti-bot wall came back instead of the page (see `looks_like_captcha`)
"""

from __future__ import annotations

import asyncio
import html
import random
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx

from researchrl.types import Page
from researchrl.web.errors import FetchError
from researchrl.web.retry import RetryableError, RetryPolicy, retry_after_seconds, with_retries
from researchrl.web.ssrf import check_url_async
from researchrl.web.transport import ShardedTransport

# The official crawler's browser User-Agent (many sites refuse library user agents).
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.0.0 Safari/537.36 Edg/119.0.0.0"
)
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FetchConfig:
    """How the fetcher talks to the web; defaults follow the official crawler where it had one."""

    connect_timeout: float = 5.0  # seconds to open a connection (official: requests timeout=(5, 10))
    read_timeout: float = 10.0  # seconds of silence allowed between bytes (official: 10)
    deadline: float = 30.0  # seconds for the whole fetch, redirects and retries included, from its first request
    max_bytes: int = 5_000_000  # decoded body size past which the page is refused (too_large)
    max_redirects: int = 5  # redirect hops followed, each one SSRF-checked
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # attempts and backoff for retryable faults
    allow_hosts: frozenset[str] = frozenset()  # "host" or "host:port" exempt from the SSRF guard (sandbox)
    user_agent: str = BROWSER_USER_AGENT  # sent with every request
    per_host_concurrency: int = 4  # simultaneous requests to one host, politeness toward each site
    max_tracked_hosts: int = 1024  # idle per-host limiters kept before the least recent are forgotten
    max_connections: int = 256  # connection pool size of the client the fetcher creates


@dataclass
class _Slot:
    """One host's semaphore and how many tasks hold or await it."""

    semaphore: asyncio.Semaphore
    users: int = 0


class HostLimiter:
    """At most `per_host` concurrent requests per host; idle hosts are forgotten LRU-first past `max_hosts`."""

    def __init__(self, per_host: int, max_hosts: int):
        self.per_host = per_host
        self.max_hosts = max_hosts
        self._slots: OrderedDict[str, _Slot] = OrderedDict()

    @asynccontextmanager
    async def hold(self, host: str) -> AsyncIterator[None]:
        """Wait for a free slot for `host` and hold it for the duration of the block."""
        slot = self._slots.get(host) or _Slot(asyncio.Semaphore(self.per_host))
        self._slots[host] = slot
        self._slots.move_to_end(host)
        slot.users += 1
        self._evict_idle()
        try:
            async with slot.semaphore:
                yield
        finally:
            slot.users -= 1

    def _evict_idle(self) -> None:
        """Drop the least recently used idle hosts while over `max_hosts` (busy ones are kept)."""
        excess = len(self._slots) - self.max_hosts
        if excess > 0:
            idle = [host for host, slot in self._slots.items() if slot.users == 0][:excess]
            for host in idle:
                del self._slots[host]


def is_text_type(media_type: str) -> bool:
    """Content types the reader can use: HTML, XHTML and any text/*."""
    return media_type in HTML_TYPES or media_type.startswith("text/")


_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)


def decode_body(body: bytes, declared: str | None, is_html: bool) -> str:
    """Bytes to text with the header charset, else an HTML <meta> charset, else UTF-8; bad bytes become U+FFFD."""
    charset = declared
    if not charset and is_html:
        match = _META_CHARSET.search(body[:4096])
        charset = match.group(1).decode("ascii") if match else None
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


# Phrases anti-bot walls put in their title or text (Google "unusual traffic", Cloudflare, DataDome, PerimeterX, ...).
_WALL_PHRASES = (
    "are you a robot",
    "are you a human",
    "not a robot",
    "verify you are human",
    "verify you are a human",
    "unusual traffic",
    "checking your browser",
    "just a moment...",
    "attention required! | cloudflare",
    "please complete the security check",
    "access to this page has been denied",
    "press & hold",
)
_WALL_MAX_TEXT = 2000  # walls carry little visible text; an article mentioning captchas carries much more
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_INVISIBLE = re.compile(r"<(script|style|template)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


def looks_like_captcha(page_html: str) -> bool:
    """Heuristic anti-bot wall detector: a wall phrase in the <title>, or a page with under
    2000 characters of visible text that contains a wall phrase or the word "captcha".

    A real article merely *about* captchas has a long text and a plain title, so it passes; a short
    page about captchas would be refused (accepted false positive: it has little to read anyway).
    """
    title = _TITLE.search(page_html[:65536])
    if title and any(p in html.unescape(title.group(1)).lower() for p in _WALL_PHRASES):
        return True
    if len(page_html) > 300_000:
        return False
    text = " ".join(html.unescape(_TAG.sub(" ", _INVISIBLE.sub(" ", page_html))).split()).lower()
    return len(text) < _WALL_MAX_TEXT and ("captcha" in text or any(p in text for p in _WALL_PHRASES))


class Fetcher:
    """Fetches pages for the browse tool; one instance serves every concurrent episode.

    Redirects are followed by hand so each hop passes the SSRF guard; each hop is retried on its own
    (RetryPolicy), and the whole fetch is bounded by `config.deadline`, counted from when its first request holds
    its host's and a connection's slot: a fetch queued behind others (per_host_concurrency, max_connections) is
    not timed out by the wait.
    """

    def __init__(
        self,
        config: FetchConfig | None = None,
        client: httpx.AsyncClient | None = None,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.config = config or FetchConfig()
        cfg = self.config
        self._timeout = httpx.Timeout(
            connect=cfg.connect_timeout, read=cfg.read_timeout, write=cfg.read_timeout, pool=cfg.read_timeout
        )
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=self._timeout, follow_redirects=False, transport=ShardedTransport(cfg.max_connections)
        )
        self._hosts = HostLimiter(cfg.per_host_concurrency, cfg.max_tracked_hosts)
        # Requests wait here, not in httpx's pool: its queue is scanned per event (quadratic at thousands queued).
        self._slots = asyncio.Semaphore(cfg.max_connections)
        self._headers = {
            "User-Agent": cfg.user_agent,
            "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5",
            "Accept-Language": "en-US,en;q=0.9",
        }
        self._rng = rng or random.Random()
        self._sleep = sleep

    async def fetch(self, url: str) -> Page:
        """The page at `url` (after redirects) as decoded text; raises FetchError for every environment fault."""
        clock = asyncio.timeout(None)  # set by the first request that holds its slots (_attempt)
        try:
            async with clock:
                return await self._follow(url, clock)
        except TimeoutError:
            if not clock.expired():
                raise
            raise FetchError(url, "timeout", f"no page within the {self.config.deadline} s deadline") from None

    async def aclose(self) -> None:
        """Close the HTTP client if this fetcher created it."""
        if self._owns_client:
            await self._client.aclose()

    async def _follow(self, url: str, clock: asyncio.Timeout) -> Page:
        """Follow at most `max_redirects` hops, checking each target before connecting."""
        current = url
        for _ in range(self.config.max_redirects + 1):
            outcome = await self._hop(current, clock)
            if isinstance(outcome, Page):
                return outcome
            current = outcome
        raise FetchError(url, "too_many_redirects", f"more than {self.config.max_redirects} redirects")

    async def _hop(self, url: str, clock: asyncio.Timeout) -> Page | str:
        """One URL with retries: the page, or the next URL when the server redirects."""
        try:
            return await with_retries(lambda: self._attempt(url, clock), self.config.retry, self._rng, self._sleep)
        except RetryableError as err:
            raise FetchError(url, err.kind, str(err)) from None

    async def _attempt(self, url: str, clock: asyncio.Timeout) -> Page | str:
        """One guarded request; network faults become RetryableError, the rest FetchError. The first to hold its
        slots starts the fetch's deadline on `clock`."""
        target = await check_url_async(url, self.config.allow_hosts, timeout=self.config.connect_timeout)
        async with self._hosts.hold(target.host), self._slots:
            if clock.when() is None:
                clock.reschedule(asyncio.get_running_loop().time() + self.config.deadline)
            try:
                async with self._client.stream(
                    "GET", url, headers=self._headers, timeout=self._timeout, follow_redirects=False
                ) as response:
                    return await self._read(url, response)
            except httpx.TimeoutException as err:
                raise RetryableError(f"{type(err).__name__}", "timeout") from None
            except httpx.ConnectError as err:
                raise RetryableError(f"connect failed: {err}", "connect") from None
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as err:
                raise RetryableError(f"connection broke: {err}", "incomplete_body") from None
            except httpx.DecodingError as err:
                raise FetchError(url, "bad_encoding", str(err)) from None
            except httpx.TransportError as err:  # proxy errors, local protocol errors, ...
                raise FetchError(url, "network", f"{type(err).__name__}: {err}") from None

    async def _read(self, url: str, response: httpx.Response) -> Page | str:
        """Turn a response into a Page, a redirect target, or the error its status/type/body calls for."""
        status = response.status_code
        if status in _REDIRECT_STATUSES:
            location = response.headers.get("location")
            if not location:
                raise FetchError(url, "bad_redirect", f"HTTP {status} without a Location header")
            return str(httpx.URL(url).join(location.strip()))
        if status == 429 or status >= 500:
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            raise RetryableError(f"HTTP {status}", f"http_{status}", retry_after)
        if not 200 <= status < 300:
            raise FetchError(url, f"http_{status}", response.reason_phrase or f"HTTP {status}")
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not is_text_type(media_type):
            raise FetchError(url, "unsupported_content_type", media_type or "none")
        body = await self._body(url, response)
        text = decode_body(body, response.charset_encoding, media_type in HTML_TYPES)
        if media_type in HTML_TYPES and looks_like_captcha(text):
            raise FetchError(url, "captcha", "the page looks like an anti-bot wall")
        return Page(url=url, status=status, content_type=media_type, text=text)

    async def _body(self, url: str, response: httpx.Response) -> bytes:
        """The decoded body, refused as soon as it (or its declared length) passes `max_bytes`."""
        limit = self.config.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise FetchError(url, "too_large", f"Content-Length {declared} > {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise FetchError(url, "too_large", f"body passed {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
