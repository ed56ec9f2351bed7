"""For the browse tool and LLM reader tests: a loopback server (pages, a scripted chat API) and real passages."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.loopback import Reply, chat_response, serve_app

PASSAGES = Path(__file__).resolve().parents[3] / "shared" / "data" / "wiki" / "passages.jsonl"


def passage_texts(ids: set[str]) -> dict[str, str]:
    """The text of these shared wiki passages by id, so readers meet real paragraphs; skips without the data."""
    if not PASSAGES.is_file():
        pytest.skip("shared data not present")
    texts = {}
    with PASSAGES.open(encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)
            if doc["id"] in ids:
                texts[doc["id"]] = doc["text"]
            if len(texts) == len(ids):
                break
    return texts



class ToolSite:
    """What the server serves and what it saw; tests register pages and script replies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.base_url = ""
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.pages: dict[str, tuple[str, bytes]] = {}
            self.page_paths: list[str] = []
            self.replies: list[Reply] = []
            self.chat_requests: list[tuple[dict[str, str], dict[str, Any]]] = []

    def add_page(self, name: str, text: str, content_type: str = "text/plain; charset=utf-8") -> str:
        """Serve `text` at /p/<name>; returns its URL."""
        self.pages[name] = (content_type, text.encode())
        return f"{self.base_url}/p/{name}"

    @property
    def allow(self) -> frozenset[str]:
        return frozenset({self.base_url.removeprefix("http://")})


def make_app(site: ToolSite) -> Starlette:
    async def page(request: Request) -> Response:
        name = request.path_params["name"]
        with site.lock:
            site.page_paths.append(name)
            found = site.pages.get(name)
        if found is None:
            return PlainTextResponse("not found", status_code=404)
        return Response(found[1], headers={"content-type": found[0]})

    async def chat(request: Request) -> Response:
        body = await request.json()
        with site.lock:
            site.chat_requests.append((dict(request.headers), body))
            reply = site.replies.pop(0) if site.replies else Reply("<extracted_info></extracted_info>")
        await asyncio.sleep(reply.delay)
        return chat_response(reply, request, "reader-test")

    return Starlette(routes=[Route("/p/{name:path}", page), Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="session")
def _tool_site_session() -> Iterator[ToolSite]:
    site = ToolSite()
    with serve_app(make_app(site)) as base_url:
        site.base_url = base_url
        yield site


@pytest.fixture
def tool_site(_tool_site_session: ToolSite) -> ToolSite:
    """The loopback pages + chat API, emptied for this test."""
    _tool_site_session.reset()
    return _tool_site_session
