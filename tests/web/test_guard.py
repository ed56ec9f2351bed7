"""The guards in front of real clients talking real loopback HTTP to the sandbox (search API, pages, reader endpoint).

Request counts come from the sandbox's own counter of search/page/reader requests, so "no upstream
request" means the server saw none.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from researchrl.sandbox.app import create_app
from researchrl.sandbox.config import SandboxConfig, shared_data_dir
from researchrl.sandbox.faults import FaultConfig, FaultCounters
from researchrl.sandbox.reader_api import READER_MODEL
from researchrl.sandbox.server import SandboxServer
from researchrl.search.base import SearchError
from researchrl.search.serper import SerperSearch
from researchrl.tools.base import EpisodeState
from researchrl.tools.reader import LLMReader, ReaderError, ReadRequest
from researchrl.tools.web_search import WebSearchTool
from researchrl.web.cache import MemoryStore
from researchrl.web.errors import FetchError
from researchrl.web.guard import Guarded, verdict
from researchrl.web.http import FetchConfig, Fetcher
from researchrl.web.kinds import PAGE, READ, SEARCH
from researchrl.web.ledger import Ledger, Prices, Usage
from researchrl.web.limits import Breakers, CircuitBreaker, RateLimit
from researchrl.web.retry import RetryPolicy
from tests.loopback import serve_app

if not (shared_data_dir() / "wiki" / "passages.jsonl").exists():
    pytest.skip("needs ../shared/data (or $RESEARCHRL_SHARED_DATA)", allow_module_level=True)

ONE_TRY = RetryPolicy(attempts=1)  # one HTTP request per client call, so server counts equal call counts
ARTICLE = "/wiki/Lilu_(mythology)"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    """A fault-free sandbox for tests that only count."""
    with SandboxServer() as server:
        yield server


def faulty(**faults: Any) -> SandboxServer:
    return SandboxServer(SandboxConfig(faults=FaultConfig(**faults)))


def requests(server: SandboxServer) -> int:
    """Search, page and reader requests the sandbox has received."""
    return server.faults["requests"]


def serper(base_url: str) -> SerperSearch:
    return SerperSearch(api_key="sandbox", base_url=base_url, timeout=5.0, retry=ONE_TRY)


def fetcher(server: SandboxServer) -> Fetcher:
    return Fetcher(FetchConfig(allow_hosts=frozenset({f"127.0.0.1:{server.port}"}), retry=ONE_TRY))


def seed_for(pattern: list[str | None], **faults: Any) -> int:
    """The first seed whose search fault sequence starts with `pattern`, by the sandbox's own draw."""
    for seed in range(100_000):
        config = FaultConfig(seed=seed, **faults)
        if [config.draw(n, "search")[0] for n in range(len(pattern))] == pattern:
            return seed
    raise AssertionError(f"no seed gives {pattern}")


async def kind_of(call: Any) -> str:
    """The kind of the environment error `call` must raise."""
    with pytest.raises((SearchError, FetchError, ReaderError)) as caught:
        await call
    return caught.value.kind


@pytest.fixture
async def closing() -> AsyncIterator[list[Any]]:
    """Guards (or clients) to close after the test."""
    things: list[Any] = []
    yield things
    for thing in things:
        await thing.aclose()


# ---------------------------------------------------------------- circuit breakers


def test_which_errors_count_against_a_breaker():
    for kind in ("timeout", "connect", "network", "http_429", "http_500", "http_503", "bad_response"):
        assert verdict(kind, SEARCH.outages) and verdict(kind, READ.outages)
    for kind in ("timeout", "connect", "incomplete_body", "http_429", "http_502"):
        assert verdict(kind, PAGE.outages)
    for kind in ("http_404", "captcha", "unsupported_content_type", "too_large", "ssrf_refused"):
        assert verdict(kind, PAGE.outages) is False  # the page's fault: the host is up
    for kind in ("auth", "http_400", "http_404"):
        assert verdict(kind, SEARCH.outages) is False
    for kind in ("circuit_open", "budget_exhausted", "rate_limited", "missing_credentials"):
        assert verdict(kind, SEARCH.outages) is None  # no call was made: no verdict


async def test_open_search_breaker_sends_nothing_and_one_trial_after_cooldown(closing: list[Any]):
    faults = {"rate_500": 0.5, "targets": ("search",)}
    seed = seed_for(["http_500"] * 4 + [None, None], **faults)
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=30, clock=clock)
    async with faulty(seed=seed, **faults) as server:
        guarded = Guarded(SEARCH, serper(server.url), breaker=breaker)
        closing.append(guarded)
        for _ in range(3):
            assert await kind_of(guarded.search("lilu")) == "http_500"
        assert breaker.state == "open" and requests(server) == 3
        for _ in range(5):
            assert await kind_of(guarded.search("lilu")) == "circuit_open"
        assert requests(server) == 3  # refused without a request
        clock.now += 30
        both = await asyncio.gather(guarded.search("lilu"), guarded.search("lilu"), return_exceptions=True)
        assert sorted(err.kind for err in both) == ["circuit_open", "http_500"]  # one trial at a time
        assert requests(server) == 4 and breaker.state == "open"
        assert await kind_of(guarded.search("lilu")) == "circuit_open"
        clock.now += 30
        hits = await guarded.search("lilu demon")  # the trial succeeds: closed again
        assert hits and breaker.state == "closed"
        assert await guarded.search("lilu demon") == hits
        assert requests(server) == 6


async def test_a_refused_request_closes_a_half_open_breaker(closing: list[Any]):
    faults = {"rate_500": 0.5, "targets": ("search",)}
    seed = seed_for(["http_500", "http_500", None], **faults)
    clock = Clock()
    breaker = CircuitBreaker(failures=2, cooldown=5, clock=clock)
    async with faulty(seed=seed, **faults) as server:
        guarded = Guarded(SEARCH, serper(server.url), breaker=breaker)
        closing.append(guarded)
        for _ in range(2):
            assert await kind_of(guarded.search("lilu")) == "http_500"
        clock.now += 5
        assert await kind_of(guarded.search("lilu", num=500)) == "http_400"  # our request's fault: the API is up
        assert breaker.state == "closed" and requests(server) == 3


async def test_page_breaker_opens_per_host_on_outages(closing: list[Any]):
    clock = Clock()
    breakers = Breakers(failures=2, cooldown=30, clock=clock)
    async with faulty(rate_500=1.0, targets=("pages",)) as server:
        pages = Guarded(PAGE, fetcher(server), breaker=breakers)
        closing.append(pages)
        url = server.url + ARTICLE
        assert [await kind_of(pages.fetch(url)) for _ in range(2)] == ["http_500", "http_500"]
        assert await kind_of(pages.fetch(url)) == "circuit_open"
        assert await kind_of(pages.fetch(server.url + "/wiki/Another")) == "circuit_open"  # same host
        assert requests(server) == 2
        assert breakers.get("127.0.0.1").state == "open" and len(breakers) == 1


async def test_page_faults_do_not_trip_the_host_breaker(sandbox: SandboxServer, closing: list[Any]):
    breakers = Breakers(failures=2)
    pages = Guarded(PAGE, fetcher(sandbox), breaker=breakers)
    closing.append(pages)
    before = requests(sandbox)
    for _ in range(4):
        assert await kind_of(pages.fetch(sandbox.url + "/wiki/No_such_article_anywhere")) == "http_404"
    assert requests(sandbox) - before == 4
    async with faulty(rate_captcha=1.0, targets=("pages",)) as walled:
        walled_pages = Guarded(PAGE, fetcher(walled), breaker=breakers)
        closing.append(walled_pages)
        for _ in range(3):
            assert await kind_of(walled_pages.fetch(walled.url + ARTICLE)) == "captcha"
        assert requests(walled) == 3
    assert breakers.get("127.0.0.1").state == "closed"


async def test_reader_breaker_and_price(closing: list[Any]):
    clock = Clock()
    ledger = Ledger(Prices({"reader:sandbox": 0.002}))
    breaker = CircuitBreaker(failures=2, cooldown=10, clock=clock)
    request = ReadRequest(
        question="What is a lilu?", sub_query="lilu", memory="", segment="A lilu is a demon.", page_index=1, total_pages=1
    )
    async with faulty(rate_500=1.0, targets=("reader",)) as server:
        llm = LLMReader(base_url=f"{server.url}/v1", model=READER_MODEL, timeout=5.0, retry=ONE_TRY)
        reader = Guarded(READ, llm, breaker=breaker, ledger=ledger, provider="reader:sandbox")
        closing.append(reader)
        assert [await kind_of(reader.read(request)) for _ in range(3)] == ["http_500", "http_500", "circuit_open"]
        assert requests(server) == 2
        assert ledger.usage("read", "reader:sandbox").calls == 2  # charged before each call made, not the refused one
        assert ledger.step_cost == pytest.approx(0.004)


async def test_reader_reads_through_the_guard_and_counts_bytes_sent(sandbox: SandboxServer, closing: list[Any]):
    ledger = Ledger()
    llm = LLMReader(base_url=f"{sandbox.url}/v1", model=READER_MODEL, timeout=5.0, retry=ONE_TRY)
    limit = RateLimit(MemoryStore(), "read:sandbox", qps=100)
    reader = Guarded(READ, llm, rate=limit, breaker=CircuitBreaker(), ledger=ledger, provider="reader:sandbox")
    closing.append(reader)
    segment = "A lilu or lilû is a masculine Akkadian word for a spirit, related to Alû, demon."
    request = ReadRequest(question="What is a lilu?", sub_query="lilu", memory="", segment=segment,
                          page_index=1, total_pages=1)
    result = await reader.read(request)
    assert "Akkadian" in result.info
    assert ledger.usage("read", "reader:sandbox") == Usage(calls=1, hits=0, bytes=len(segment.encode()), cost=0.0)


# ---------------------------------------------------------------- budgets and the ledger


async def test_step_budget_stops_searches_and_the_tool_reports_it(sandbox: SandboxServer, closing: list[Any]):
    ledger = Ledger(step_budget=0.003)  # three serper searches at $0.001
    guarded = Guarded(SEARCH, serper(sandbox.url), breaker=CircuitBreaker(failures=1), ledger=ledger)
    closing.append(guarded)
    tool = WebSearchTool(guarded)
    state = EpisodeState(question="Who was Lilu?")
    before = requests(sandbox)
    first = await tool({"query": ["lilu", "akkadian demon", "lilith"]}, state)
    assert first.errors == () and requests(sandbox) - before == 3
    assert ledger.step_cost == pytest.approx(0.003) and ledger.step_exhausted
    second = await tool({"query": ["alu demon", "sumerian spirits"]}, state)
    assert second.errors == ("search_budget_exhausted", "search_budget_exhausted")
    assert "'error': 'search_budget_exhausted'" in second.text
    assert requests(sandbox) - before == 3  # nothing was sent
    assert guarded.breaker.state == "closed"  # a refusal is no verdict on the provider
    metrics = ledger.metrics()
    assert metrics["web/calls/search/serper"] == 3.0 and metrics["web/budget_refusals"] == 2.0
    ledger.start_step(1)
    third = await tool({"query": ["alu demon"]}, state)
    assert third.errors == () and requests(sandbox) - before == 4
    assert ledger.run_cost == pytest.approx(0.004)


async def test_ledger_counts_match_the_server(sandbox: SandboxServer, closing: list[Any]):
    ledger = Ledger(Prices({"serper": 0.0025}))
    search = Guarded(SEARCH, serper(sandbox.url), ledger=ledger)
    pages = Guarded(PAGE, fetcher(sandbox), breaker=Breakers(), ledger=ledger)
    closing.extend([search, pages])
    before = requests(sandbox)
    hits = [hit for query in ("lilu", "akkadian", "demon", "spirit") for hit in await search.search(query, 3)]
    searched = requests(sandbox) - before
    fetched = [await pages.fetch(hit.url) for hit in hits[:5]]
    metrics = ledger.metrics()
    assert metrics["web/calls/search/serper"] == searched == 4
    assert metrics["web/cost_usd"] == pytest.approx(4 * 0.0025)
    assert metrics["web/calls/page/fetch"] == requests(sandbox) - before - searched == 5
    assert metrics["web/bytes/page"] == sum(len(page.text.encode()) for page in fetched)
    assert metrics["web/bytes/search"] == sum(len(f"{h.title}{h.url}{h.snippet}".encode()) for h in hits)


# ---------------------------------------------------------------- rate limits


async def test_a_rate_limit_too_long_is_refused_uncharged(sandbox: SandboxServer, closing: list[Any]):
    ledger = Ledger()
    breaker = CircuitBreaker(failures=1)
    limit = RateLimit(MemoryStore(), "search:serper", qps=1, burst=1, max_wait=0.1)
    guarded = Guarded(SEARCH, serper(sandbox.url), rate=limit, breaker=breaker, ledger=ledger)
    closing.append(guarded)
    before = requests(sandbox)
    outcomes = await asyncio.gather(*(guarded.search("lilu") for _ in range(3)), return_exceptions=True)
    assert isinstance(outcomes[0], list)
    assert [err.kind for err in outcomes[1:]] == ["rate_limited", "rate_limited"]
    assert requests(sandbox) - before == 1 and ledger.usage("search", "serper").calls == 1
    assert breaker.state == "closed" and breaker.consecutive_failures == 0


class Arrivals:
    """ASGI middleware noting when each search request reaches the server."""

    def __init__(self, app: Any):
        self.app = app
        self.times: list[float] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/search":
            with self.lock:
                self.times.append(time.monotonic())
        await self.app(scope, receive, send)


async def test_observed_request_rate_stays_within_the_limit(closing: list[Any]):
    qps, burst, calls = 20.0, 2.0, 40
    arrivals = Arrivals(create_app(SandboxConfig(), FaultCounters()))
    with serve_app(arrivals) as base_url:
        guarded = Guarded(SEARCH, serper(base_url), rate=RateLimit(MemoryStore(), "search:serper", qps, burst))
        closing.append(guarded)
        answers = await asyncio.gather(*(guarded.search(f"lilu {i}") for i in range(calls)))
    assert all(answers)
    times = sorted(arrivals.times)
    assert len(times) == calls
    for i in range(calls):  # any window holds at most burst + qps * its length (+1 for loopback jitter)
        for j in range(i + 1, calls):
            assert j - i + 1 <= burst + qps * (times[j] - times[i]) + 1
    span = times[-1] - times[0]
    assert (calls - burst) / qps - 0.1 <= span < (calls - burst) / qps + 1.5  # limited, not starved
