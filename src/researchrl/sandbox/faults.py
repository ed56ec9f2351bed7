"""Seeded fault injection for the sandbox: latency, HTTP errors, hangs, broken bodies, walls and hostile pages.

Each faultable request takes the next number n from a counter and draws from random.Random(f"{seed}/{n}"),
so a sequential client sees the same faults for the same seed (hops inside a redirect loop take no number).
The decision is one uniform draw against the cumulative rates of the kinds that apply to the request's
target (APPLIES_TO), in FAULT_KINDS order; the latency draw comes from the same generator. New kinds are
appended, so a seed's sequence of the original five kinds is unchanged while the new rates are 0.

What each kind looks like to a client:

    http_429       429 with Retry-After (JSON on search, OpenAI error JSON on reader, HTML on pages)
    http_500       500 Internal Server Error, shaped the same way
    timeout        the response hangs `hang_s` seconds (a read timeout for any client that gives up first)
    truncated      Content-Length larger than the body sent, then the connection closes
    captcha        200 OK with an "Are you a robot?" wall instead of the content
    garbage_json   200 OK, Content-Type application/json, a body that is not JSON
    redirect_loop  302 into a pair of URLs that redirect to each other forever (A -> B -> C -> B -> ...)
    huge_page      a 50 MB text/html body streamed in chunks, with or without Content-Length
    binary         200 OK, image/png bytes where a page was expected
    bad_encoding   Content-Encoding: gzip on a body that is not gzip

A connect timeout cannot come from an HTTP app once the connection is accepted: clients meet it at
`server.Blackhole`, a listening socket that never accepts.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from researchrl.sandbox.pages import NOT_GZIP_PAGE, captcha_page, huge_page_chunks, message_page, tiny_png

Target = Literal["search", "pages", "reader"]
TARGETS: tuple[Target, ...] = ("search", "pages", "reader")
RATE_FIELDS = {  # fault kind -> its FaultConfig rate field, in draw order (new kinds appended, never inserted)
    "http_429": "rate_429", "http_500": "rate_500", "timeout": "rate_timeout", "truncated": "rate_truncated",
    "captcha": "rate_captcha", "garbage_json": "rate_garbage_json", "redirect_loop": "rate_redirect_loop",
    "huge_page": "rate_huge_page", "binary": "rate_binary", "bad_encoding": "rate_bad_encoding",
}
FAULT_KINDS = tuple(RATE_FIELDS)
APPLIES_TO: dict[str, tuple[Target, ...]] = {  # which endpoints each kind can hit
    "http_429": TARGETS, "http_500": TARGETS, "timeout": TARGETS,
    "truncated": ("search", "pages"), "captcha": ("search", "pages"), "garbage_json": ("search", "reader"),
    "redirect_loop": ("pages",), "huge_page": ("pages",), "binary": ("pages",), "bad_encoding": ("pages",),
}
HUGE_PAGE_BYTES = 50_000_000  # ten times the fetcher's default max_bytes
LOOP_PARAM = "sandbox_redirect_loop"  # query parameter marking the two URLs of a redirect loop
GARBAGE_JSON = b'{"organic": [{"title": "Sandbox", "link": "<html><body>502 Bad Gateway</body></html>'  # cut short
READER_PATH = "/v1/chat/completions"
Headers = tuple[tuple[bytes, bytes], ...]
Z_99 = 2.3263478740408408  # standard normal quantile at 0.99


@dataclass(frozen=True)
class FaultConfig:
    """What goes wrong and how often; everything is off by default. Rates are per request at the targets a kind applies to."""

    seed: int = 0  # the fault sequence is a function of (seed, request number)
    latency_ms: float = 0.0  # median added latency; fixed unless latency_p99_ms is set
    latency_p99_ms: float | None = None  # with it, latency is lognormal with this 99th percentile
    rate_429: float = 0.0  # 429 Too Many Requests with a Retry-After header
    rate_500: float = 0.0  # 500 Internal Server Error
    rate_timeout: float = 0.0  # hang `hang_s` seconds before answering normally
    rate_truncated: float = 0.0  # Content-Length larger than the body sent, then close (search, pages)
    rate_captcha: float = 0.0  # 200 OK with an "Are you a robot?" page instead of the content (search, pages)
    retry_after_s: int = 1  # the Retry-After value of a 429
    hang_s: float = 30.0  # how long a timeout fault hangs (clients should give up first)
    targets: tuple[Target, ...] = TARGETS  # which endpoints faults apply to
    rate_garbage_json: float = 0.0  # 200 OK with a body that is not JSON (search, reader)
    rate_redirect_loop: float = 0.0  # 302 into a redirect loop that never lands (pages)
    rate_huge_page: float = 0.0  # a 50 MB page streamed without building it in memory (pages)
    rate_binary: float = 0.0  # image/png bytes instead of HTML (pages)
    rate_bad_encoding: float = 0.0  # Content-Encoding: gzip on a body that is not gzip (pages)
    huge_page_length: Literal["declared", "chunked", "either"] = "either"  # send Content-Length? either: seeded coin

    def __post_init__(self) -> None:
        rates = self.rates
        per_target = {t: sum(r for k, r in rates.items() if t in APPLIES_TO[k]) for t in TARGETS}
        if any(not 0.0 <= r <= 1.0 for r in rates.values()) or max(per_target.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates must lie in [0, 1] and sum to at most 1 per target, got {rates}")
        if self.latency_ms < 0 or (self.latency_p99_ms is not None and self.latency_p99_ms < self.latency_ms):
            raise ValueError("latency_ms must be >= 0 and latency_p99_ms >= latency_ms")
        if self.latency_p99_ms is not None and self.latency_ms == 0:
            raise ValueError("a lognormal latency needs a positive median latency_ms")
        if unknown := set(self.targets) - set(TARGETS):
            raise ValueError(f"unknown fault targets {sorted(unknown)}; use any of {', '.join(TARGETS)}")
        if self.huge_page_length not in ("declared", "chunked", "either"):
            raise ValueError("huge_page_length must be 'declared', 'chunked' or 'either'")

    @property
    def rates(self) -> dict[str, float]:
        """Rate per fault kind, in the order the draw checks them."""
        return {kind: getattr(self, name) for kind, name in RATE_FIELDS.items()}

    def draw(self, n: int, target: Target | None = None) -> tuple[str | None, float]:
        """The fault kind (None for none) and the latency in seconds of request number `n` at `target` (None: any)."""
        rng = random.Random(f"{self.seed}/{n}")
        u, kind, acc = rng.random(), None, 0.0
        for name, rate in self.rates.items():
            if target is not None and target not in APPLIES_TO[name]:
                continue
            acc += rate
            if u < acc:
                kind = name
                break
        if self.latency_p99_ms is None:
            latency_ms = self.latency_ms
        else:
            sigma = (math.log(self.latency_p99_ms) - math.log(self.latency_ms)) / Z_99
            latency_ms = rng.lognormvariate(math.log(self.latency_ms), sigma)
        return kind, latency_ms / 1000.0

    def declares_length(self, n: int) -> bool:
        """Whether huge page number `n` is sent with a Content-Length (a coin of its own, so other draws keep their values)."""
        if self.huge_page_length != "either":
            return self.huge_page_length == "declared"
        return random.Random(f"{self.seed}/{n}/length").random() < 0.5


class FaultCounters:
    """Thread-safe counts of faultable requests and of each fault injected (read from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(("requests", *FAULT_KINDS), 0)
        self._draws = 0  # requests that drew a fault; loop hops are requests that do not

    def next_request(self) -> int:
        """Count a faultable request and return its draw number (0-based)."""
        with self._lock:
            self._counts["requests"] += 1
            self._draws += 1
            return self._draws - 1

    def count_hop(self) -> None:
        """Count a request inside a redirect loop: seen, but it draws nothing, so it shifts no later draw."""
        with self._lock:
            self._counts["requests"] += 1

    def add(self, kind: str) -> None:
        """Count one injected fault."""
        with self._lock:
            self._counts[kind] += 1

    def snapshot(self) -> dict[str, int]:
        """Current counts: `requests` plus one entry per fault kind."""
        with self._lock:
            return dict(self._counts)


async def _read_body(receive: Receive) -> list[Message]:
    """Drain the request body so it can be replayed to the app while `receive` is kept for disconnects."""
    messages = [await receive()]
    while messages[-1]["type"] == "http.request" and messages[-1].get("more_body", False):
        messages.append(await receive())
    return messages


async def _wait_disconnect(receive: Receive) -> None:
    """Return once the client goes away."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _replay(body: list[Message]) -> Receive:
    """A `receive` that hands the app the buffered request body, then reports a disconnect."""
    pending = list(body)

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    return receive


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[Message, bytes]:
    """Run the app to completion and return its response start message and full body."""
    sent: list[Message] = []

    async def keep(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, keep)
    return sent[0], b"".join(m.get("body", b"") for m in sent[1:])


async def _respond(send: Send, status: int, content_type: str, body: bytes, extra: Headers = ()) -> None:
    """Send a complete response."""
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _target(scope: Scope) -> Target | None:
    """Which faultable endpoint a request hits; None for health, counters, models and everything else."""
    path = scope.get("path", "")
    if path == "/search":
        return "search"
    if path.startswith(("/wiki/", "/html/")):
        return "pages"
    if path == READER_PATH:
        return "reader"
    return None


def _loop_step(scope: Scope) -> str | None:
    """Which URL of a redirect loop this request is ("1" or "2"); None for a URL outside any loop."""
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return dict(query).get(LOOP_PARAM)


def _loop_location(scope: Scope) -> str:
    """The next URL of the loop: the page enters at "1", then "1" and "2" point at each other forever."""
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    rest = [(k, v) for k, v in query if k != LOOP_PARAM]
    path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
    return f"{path}?{urlencode([*rest, (LOOP_PARAM, '2' if _loop_step(scope) == '1' else '1')])}"


def _error_body(kind: str, target: Target, retry_after_s: int) -> tuple[int, str, bytes, Headers]:
    """A 429 or 500 shaped like the real endpoint's: Serper JSON, OpenAI error JSON, or an HTML page."""
    status, text = (429, "Too Many Requests") if kind == "http_429" else (500, "Internal Server Error")
    headers: Headers = ((b"retry-after", str(retry_after_s).encode()),) if status == 429 else ()
    if target == "search":
        return status, "application/json", json.dumps({"message": text, "statusCode": status}).encode(), headers
    if target == "reader":
        kind_name = "rate_limit_exceeded" if status == 429 else "server_error"
        error = {"message": text, "type": kind_name, "param": None, "code": kind_name}
        return status, "application/json", json.dumps({"error": error}).encode(), headers
    page = message_page(status, text, "The server could not complete your request. Please try again later.")
    return status, "text/html; charset=utf-8", page.encode(), headers


def _canned(kind: str, target: Target, scope: Scope, retry_after_s: int) -> tuple[int, str, bytes, Headers]:
    """The whole response of a fault that replaces the content: (status, content type, body, extra headers)."""
    if kind in ("http_429", "http_500"):
        return _error_body(kind, target, retry_after_s)
    if kind == "captcha":
        return 200, "text/html; charset=utf-8", captcha_page().encode(), ()
    if kind == "garbage_json":
        return 200, "application/json", GARBAGE_JSON, ()
    if kind == "redirect_loop":
        return 302, "text/html; charset=utf-8", b"", ((b"location", _loop_location(scope).encode("latin-1")),)
    if kind == "binary":
        return 200, "image/png", tiny_png(), ()
    if kind == "bad_encoding":
        return 200, "text/html; charset=utf-8", NOT_GZIP_PAGE, ((b"content-encoding", b"gzip"),)
    raise ValueError(f"{kind} is not a canned fault")


class FaultInjector:
    """ASGI middleware that applies a FaultConfig to the search API, the page server and the reader endpoint."""

    def __init__(self, app: ASGIApp, config: FaultConfig, counters: FaultCounters):
        self.app, self.config, self.counters = app, config, counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = _target(scope) if scope["type"] == "http" else None
        if target is None or target not in self.config.targets:
            return await self.app(scope, receive, send)
        if target == "pages" and _loop_step(scope) is not None:  # inside a loop: every hop redirects, no new draw
            self.counters.count_hop()
            return await _respond(send, *_canned("redirect_loop", target, scope, self.config.retry_after_s))
        n = self.counters.next_request()
        kind, latency_s = self.config.draw(n, target)
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        if kind is not None:
            self.counters.add(kind)
        body = await _read_body(receive)
        if body[-1]["type"] == "http.disconnect":
            return  # the client gave up during the injected latency: nobody to answer
        if kind == "timeout":
            try:
                await asyncio.wait_for(_wait_disconnect(receive), timeout=self.config.hang_s)
                return  # the client gave up: nobody to answer
            except asyncio.TimeoutError:
                kind = None
        if kind is None:
            return await self.app(scope, _replay(body), send)
        if kind == "truncated":
            return await self._truncated(scope, body, send)
        if kind == "huge_page":
            return await self._huge_page(n, receive, send)
        await _respond(send, *_canned(kind, target, scope, self.config.retry_after_s))

    async def _truncated(self, scope: Scope, body: list[Message], send: Send) -> None:
        """Declare 1 KiB more than the real body, send half of it, and return so the server closes mid-body."""
        start, content = await _capture(self.app, scope, _replay(body))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(content) + 1024).encode())]})
        await send({"type": "http.response.body", "body": content[: len(content) // 2], "more_body": True})

    async def _huge_page(self, n: int, receive: Receive, send: Send) -> None:
        """Stream HUGE_PAGE_BYTES of HTML chunk by chunk (never all in memory), stopping when the client leaves."""
        headers = [(b"content-type", b"text/html; charset=utf-8")]
        if self.config.declares_length(n):
            headers.append((b"content-length", str(HUGE_PAGE_BYTES).encode()))
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for chunk in huge_page_chunks(HUGE_PAGE_BYTES):
                if gone.done():
                    return
                await asyncio.sleep(0)  # let the disconnect watcher and other requests run between chunks
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            gone.cancel()
