"""A scripted OpenAI-compatible chat endpoint on loopback for the judge tests: replies, counts, requests in flight."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.loopback import Reply, chat_response, serve_app



class JudgeSite:
    """What the endpoint answers (scripted replies, then `default`) and what it saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.base_url = ""
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.replies: list[Reply] = []
            self.default = Reply('{"rationale": "default", "judgement": "incorrect"}')
            self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
            self.in_flight = 0
            self.max_in_flight = 0

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)


def make_app(site: JudgeSite) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        with site.lock:
            site.requests.append((dict(request.headers), body))
            reply = site.replies.pop(0) if site.replies else site.default
            site.in_flight += 1
            site.max_in_flight = max(site.max_in_flight, site.in_flight)
        try:
            deadline = time.monotonic() + reply.delay
            while time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(0.02)  # a hang that ends when the client gives up
        finally:
            with site.lock:
                site.in_flight -= 1
        return chat_response(reply, request, "judge-test")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="session")
def _judge_site_session() -> Iterator[JudgeSite]:
    site = JudgeSite()
    with serve_app(make_app(site)) as base_url:
        site.base_url = base_url
        yield site


@pytest.fixture
def judge_site(_judge_site_session: JudgeSite) -> JudgeSite:
    """The loopback judge endpoint, emptied for this test."""
    _judge_site_session.reset()
    return _judge_site_session
