"""Real HTTP on 127.0.0.1 for tests: serve any ASGI app on a free port; a client transport that goes nowhere else."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response


@contextlib.contextmanager
def serve_app(app) -> Iterator[str]:  # noqa: ANN001
    """Yield the base URL while uvicorn serves `app`; stop and join the thread on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "loopback server did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


class LoopbackOnlyTransport(httpx.AsyncBaseTransport):
    """Sends only to 127.0.0.1, fails the test on any other host, and records every host it was asked to reach."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.hosts: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        if request.url.host != "127.0.0.1":
            raise AssertionError(f"connection attempted to {request.url}")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def chat_completion(content: str, model: str = "loopback-test") -> dict[str, Any]:
    """A minimal OpenAI chat.completion object, as scripted loopback endpoints answer."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@dataclass
class Reply:
    """One scripted answer of a loopback chat endpoint: a completion with `content`, an error `status`, or a `raw` body."""

    content: str = ""
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    raw: str | bytes | None = None  # sent as is instead of a completion (text/plain unless `headers` says otherwise)


def chat_response(reply: Reply, request: Request, model: str) -> Response:
    """The HTTP response a Reply stands for; error bodies echo the Authorization header (to catch key leaks)."""
    if reply.raw is not None:
        return PlainTextResponse(reply.raw, status_code=reply.status, headers=reply.headers)
    if reply.status != 200:
        error = {"error": {"message": f"echo {request.headers.get('authorization')}", "type": "test"}}
        return JSONResponse(error, status_code=reply.status, headers=reply.headers)
    return JSONResponse(chat_completion(reply.content, model), headers=reply.headers)
