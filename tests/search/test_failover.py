"""FailoverSearch over the real clients: Serper against the sandbox, Brave and SearXNG against a loopback API.

The loopback API answers by path, so each provider gets its own behaviour from one server: Brave's
path a 429 with Retry-After, SearXNG's path a SearXNG body rebuilt from real results (see test_searxng.py).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from researchrl.sandbox.config import SandboxConfig, shared_data_dir
from researchrl.sandbox.faults import FaultConfig
from researchrl.sandbox.server import SandboxServer
from researchrl.search.base import SearchError
from researchrl.search.brave import BraveSearch
from researchrl.search.failover import FailoverSearch
from researchrl.search.searxng import SearxngSearch
from researchrl.search.serper import SerperSearch
from researchrl.web.guard import Guarded
from researchrl.web.kinds import SEARCH
from researchrl.web.ledger import Ledger
from researchrl.web.limits import CircuitBreaker
from researchrl.web.retry import RetryPolicy
from tests.loopback import serve_app
from tests.search.search_api_fakes import Reply, json_reply, vendor_json

if not (shared_data_dir() / "wiki" / "passages.jsonl").exists():
    pytest.skip("needs ../shared/data (or $RESEARCHRL_SHARED_DATA)", allow_module_level=True)

ONE_TRY = RetryPolicy(attempts=1)  # one HTTP request per search, so server counts equal call counts
BRAVE_PATH, SEARXNG_PATH = "/res/v1/web/search", "/search"


def searxng_body() -> dict[str, Any]:
    """A raw SearXNG JSON answer built from the real results LangChain's wrapper printed (title, link, snippet)."""
    call = vendor_json("searxng/langchain_searxwrapper_processed_results.json")[0]
    results = [
        {"url": hit["link"], "title": hit["title"], "content": hit["snippet"], "engine": hit["engines"][0]}
        for hit in call["langchain_processed_results"]
    ]
    return {"query": "large language model prompt", "results": results, "unresponsive_engines": []}


class ByPath:
    """A loopback API: one programmed reply per path, and a count of requests per path."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        with self.lock:
            self.counts[path] = self.counts.get(path, 0) + 1
        reply = self.replies.get(path, Reply(404, b'{"error": "no such path"}'))
        return Response(reply.body, status_code=reply.status, headers=reply.headers)


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[ByPath, str]]:
    site = ByPath()
    with serve_app(Starlette(routes=[Route("/{path:path}", site.handle, methods=["GET", "POST"])])) as base_url:
        yield site, base_url


@pytest.fixture
def providers(api: tuple[ByPath, str]) -> tuple[ByPath, str]:
    """Brave rate-limited (429), SearXNG answering; counts reset."""
    site, base_url = api
    site.counts.clear()
    site.replies = {
        BRAVE_PATH: json_reply({"type": "ErrorResponse", "error": {"status": 429}}, 429, {"Retry-After": "1"}),
        SEARXNG_PATH: json_reply(searxng_body()),
    }
    return site, base_url


@pytest.fixture(scope="module")
def failing_serper() -> Iterator[SandboxServer]:
    """The sandbox's Serper API answering every search with a 500."""
    with SandboxServer(SandboxConfig(faults=FaultConfig(rate_500=1.0, targets=("search",)))) as server:
        yield server


@pytest.fixture(scope="module")
def serper_ok() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


@pytest.fixture
async def closing() -> AsyncIterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in things:
        await thing.aclose()


def chain(serper_url: str, base_url: str) -> tuple[SerperSearch, BraveSearch, SearxngSearch]:
    return (
        SerperSearch(api_key="sandbox", base_url=serper_url, timeout=5.0, retry=ONE_TRY),
        BraveSearch(api_key="sandbox", base_url=base_url, timeout=5.0, retry=ONE_TRY),
        SearxngSearch(base_url=base_url, timeout=5.0, retry=ONE_TRY),
    )


async def test_500_then_429_then_searxng_answers(failing_serper: SandboxServer, providers, closing: list[Any]):
    site, base_url = providers
    search = FailoverSearch(list(chain(failing_serper.url, base_url)))
    closing.append(search)
    assert search.name == "failover(serper>brave>searxng)"
    before = failing_serper.faults["requests"]
    hits = await search.search("Large Language Model prompt", 3)
    assert [h.url for h in hits] == [r["url"] for r in searxng_body()["results"][:3]]
    await search.search("another question")
    assert search.served_by == {"serper": 0, "brave": 0, "searxng": 2}
    assert failing_serper.faults["requests"] - before == 2
    assert site.counts == {BRAVE_PATH: 2, SEARXNG_PATH: 2}


async def test_when_all_fail_the_last_kind_is_raised_with_every_failure(
    failing_serper: SandboxServer, providers, closing: list[Any]
):
    site, base_url = providers
    serper, brave, _ = chain(failing_serper.url, base_url)
    search = FailoverSearch([serper, brave])
    closing.append(search)
    with pytest.raises(SearchError) as caught:
        await search.search("lilu")
    err = caught.value
    assert err.provider == "failover(serper>brave)" and err.kind == "http_429"
    assert "serper: http_500" in str(err) and "brave: http_429" in str(err)
    assert search.served_by == {"serper": 0, "brave": 0}


async def test_a_spent_budget_stops_the_chain_without_spending_elsewhere(
    serper_ok: SandboxServer, providers, closing: list[Any]
):
    site, base_url = providers
    serper, _, searxng = chain(serper_ok.url, base_url)
    ledger = Ledger(run_budget=0.0)  # serper costs money, searxng is free and would answer
    search = FailoverSearch([Guarded(SEARCH, serper, ledger=ledger), Guarded(SEARCH, searxng, ledger=ledger)])
    closing.append(search)
    before = serper_ok.faults["requests"]
    with pytest.raises(SearchError) as caught:
        await search.search("lilu")
    assert caught.value.kind == "budget_exhausted" and caught.value.provider == "serper"
    assert serper_ok.faults["requests"] == before and site.counts == {}
    assert ledger.run_exhausted


async def test_an_open_circuit_moves_on_without_a_request(failing_serper: SandboxServer, providers, closing: list[Any]):
    site, base_url = providers
    serper, _, searxng = chain(failing_serper.url, base_url)
    guarded = Guarded(SEARCH, serper, breaker=CircuitBreaker(failures=1, cooldown=60))
    search = FailoverSearch([guarded, Guarded(SEARCH, searxng)])
    closing.append(search)
    before = failing_serper.faults["requests"]
    for _ in range(3):
        assert await search.search("Large Language Model prompt")
    assert failing_serper.faults["requests"] - before == 1  # only the failure that opened the circuit
    assert guarded.breaker.state == "open"
    assert search.served_by == {"serper": 0, "searxng": 3} and site.counts == {SEARXNG_PATH: 3}


async def test_an_empty_answer_is_an_answer(serper_ok: SandboxServer, providers, closing: list[Any]):
    site, base_url = providers
    search = FailoverSearch(list(chain(serper_ok.url, base_url)))
    closing.append(search)
    assert await search.search("   ") == []  # the sandbox returns no organic results for a blank query
    assert search.served_by["serper"] == 1 and site.counts == {}


async def test_aclose_closes_every_backend(failing_serper: SandboxServer, providers):
    _, base_url = providers
    backends = chain(failing_serper.url, base_url)
    search = FailoverSearch(list(backends))
    await search.aclose()
    for backend in backends:
        with pytest.raises(RuntimeError, match="closed"):
            await backend.search("lilu")


def test_needs_a_backend():
    with pytest.raises(ValueError):
        FailoverSearch([])
