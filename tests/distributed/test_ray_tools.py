"""Tool workers on a local Ray instance, against the real sandbox: same results, same faults, spread, timeouts, deaths."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from researchrl.distributed.cluster import require_ray
from researchrl.distributed.tools import RayToolPool, SandboxUpstreams, ToolWorker
from researchrl.errors import MissingDependency
from researchrl.sandbox.pages import page_path
from researchrl.sandbox.server import SandboxServer
from researchrl.search.base import MissingCredentials, SearchError
from researchrl.tools.base import EpisodeState
from researchrl.tools.browse import BrowseTool
from researchrl.tools.pages import extract_text, segment
from researchrl.tools.reader import ReaderError, ReadRequest
from researchrl.tools.web_search import WebSearchTool
from researchrl.web.errors import FetchError
from researchrl.web.fault_record import FaultRecord
from researchrl.web.kinds import PAGE, READ, SEARCH
from researchrl.web.retry import RetryPolicy
from tests.distributed.conftest import host, start_faulty

ray = pytest.importorskip("ray")
QUESTION = "If Gallu is a demon Lilu is what?"
QUERIES = ["Lilu demon", "Gallu", "Mesopotamian spirits", "demon spirit", "Alû demon", "Utukku"]
ARTICLE = page_path("Alû")


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def pool(sandbox: SandboxServer) -> Iterator[RayToolPool]:
    """Two workers over the fault-free sandbox."""
    tool_pool = RayToolPool(SandboxUpstreams(sandbox.url, frozenset({host(sandbox)})), workers=2)
    asyncio.run(tool_pool.start())
    yield tool_pool
    asyncio.run(tool_pool.aclose())
    assert ray.is_initialized(), "a pool must not shut down a Ray it did not start"


@pytest.fixture(scope="module")
def faulty() -> Iterator[tuple[SandboxServer, SandboxServer, SandboxServer]]:
    """Sandboxes that always answer 500, always show a captcha wall, and answer only after 2 s."""
    servers = (
        start_faulty(rate_500=1.0), start_faulty(rate_captcha=1.0, targets=("pages",)), start_faulty(latency_ms=2000)
    )
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def faulty_factory(faulty: tuple[SandboxServer, ...]) -> SandboxUpstreams:
    """Search on the 500 sandbox, pages from all three, an LLM reader at a closed port; one try each."""
    return SandboxUpstreams(
        faulty[0].url, frozenset(host(s) for s in faulty), reader="llm",
        reader_url=f"http://127.0.0.1:{free_port()}/v1", retry=RetryPolicy(attempts=1),
    )


@pytest.fixture(scope="module")
def faulty_pool(faulty_factory: SandboxUpstreams) -> Iterator[RayToolPool]:
    """One worker over the faulty sandboxes."""
    tool_pool = RayToolPool(faulty_factory, workers=1)
    asyncio.run(tool_pool.start())
    yield tool_pool
    asyncio.run(tool_pool.aclose())


@pytest.mark.parametrize(
    "err",
    [
        SearchError("serper", "http_500", "HTTP 500: boom (gave up after 3 attempts)"),
        MissingCredentials("serper", "SERPER_API_KEY"),
        FetchError("http://127.0.0.1:1/x", "captcha", "an anti-bot wall: came back"),
        ReaderError("timeout", "reader 'qwen-plus' failed after 3 attempts"),
    ],
)
def test_remote_fault_rebuilds_the_same_exception(err: Exception) -> None:
    rebuilt = pickle.loads(pickle.dumps(FaultRecord.of(err))).rebuild()
    assert type(rebuilt) is type(err) and str(rebuilt) == str(err) and rebuilt.kind == err.kind
    assert vars(rebuilt) == vars(err)


def test_missing_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependency, match=r"pip install 'researchrl\[ray\]'"):
        require_ray()


async def test_search_fetch_read_through_the_pool_equal_local_calls(pool: RayToolPool) -> None:
    search, pages, reader = pool.factory()
    remote_search, remote_pages = pool.tool(SEARCH, name="serper"), pool.tool(PAGE)
    remote_reader = pool.tool(READ)
    try:
        local_hits = await asyncio.gather(*(search.search(q, 10) for q in QUERIES))
        remote_hits = await asyncio.gather(*(remote_search.search(q, 10) for q in QUERIES))
        assert remote_hits == local_hits and all(local_hits) and len(local_hits[0]) == 10
        urls = [hits[0].url for hits in local_hits[:3]] + [pool.factory.search_url + ARTICLE]
        local_pages = await asyncio.gather(*(pages.fetch(u) for u in urls))
        assert await asyncio.gather(*(remote_pages.fetch(u) for u in urls)) == local_pages
        assert all(page.status == 200 and page.text for page in local_pages)
        text = segment(extract_text(local_pages[0]), 4000)[0]
        request = ReadRequest(QUESTION, QUERIES[0], "", text, 1, 1)
        local_read = await reader.read(request)
        assert await remote_reader.read(request) == local_read and local_read.info
    finally:
        await search.aclose()
        await pages.aclose()


async def test_calls_are_spread_over_both_workers(pool: RayToolPool) -> None:
    before = await pool.stats()
    remote_search = pool.tool(SEARCH)
    await asyncio.gather(*(remote_search.search(q, 3) for q in QUERIES * 4))
    after = await pool.stats()
    served = [a.search - b.search for a, b in zip(after, before)]
    assert len({s.pid for s in after}) == 2, "two worker processes"
    assert sum(served) == len(QUERIES) * 4 and min(served) >= 6, served
    assert min(pool.calls) > 0


async def test_tools_on_proxies_observe_what_local_tools_observe(pool: RayToolPool) -> None:
    search, pages, reader = pool.factory()
    local = (WebSearchTool(search), BrowseTool(pages, reader))
    remote = (WebSearchTool(pool.tool(SEARCH)), BrowseTool(pool.tool(PAGE), pool.tool(READ)))
    try:
        seen = []
        for web_search, browse in (local, remote):
            state = EpisodeState(QUESTION)
            found = await web_search({"query": QUERIES[:2]}, state)
            urls = [hits[0].url for _, hits in state.searches] + ["http://10.0.0.1/private"]
            read = await browse({"url_list": urls}, state)
            seen.append((found, read, state))
        assert seen[1] == seen[0]
        found, read, _ = seen[0]
        assert found.errors == () and read.errors == ("ssrf_refused",) and "page_summary" in read.text
    finally:
        await search.aclose()
        await pages.aclose()


async def test_environment_faults_come_back_as_the_same_errors(
    faulty_pool: RayToolPool, faulty: tuple[SandboxServer, ...]
) -> None:
    search, pages, reader = faulty_pool.factory()
    remote_search, remote_pages = faulty_pool.tool(SEARCH, name="serper"), faulty_pool.tool(PAGE)
    remote_reader = faulty_pool.tool(READ)
    cases = [
        (search.search("Lilu", 10), remote_search.search("Lilu", 10), SearchError, "http_500"),
        (pages.fetch(faulty[0].url + ARTICLE), remote_pages.fetch(faulty[0].url + ARTICLE), FetchError, "http_500"),
        (pages.fetch(faulty[1].url + ARTICLE), remote_pages.fetch(faulty[1].url + ARTICLE), FetchError, "captcha"),
        (reader.read(ReadRequest(QUESTION, "Lilu", "", "Lilu is a spirit.", 1, 1)),
         remote_reader.read(ReadRequest(QUESTION, "Lilu", "", "Lilu is a spirit.", 1, 1)), ReaderError, "connect"),
    ]
    try:
        for local_call, remote_call, error, kind in cases:
            with pytest.raises(error) as local_err:
                await local_call
            with pytest.raises(error) as remote_err:
                await remote_call
            assert type(remote_err.value) is type(local_err.value)
            assert remote_err.value.kind == kind == local_err.value.kind
            assert str(remote_err.value) == str(local_err.value) and vars(remote_err.value) == vars(local_err.value)
    finally:
        await search.aclose()
        await pages.aclose()
        await reader.aclose()


async def test_a_slow_call_becomes_worker_timeout(faulty_pool: RayToolPool, faulty: tuple[SandboxServer, ...]) -> None:
    url = faulty[2].url + ARTICLE
    start = time.monotonic()
    with pytest.raises(FetchError) as err:
        await faulty_pool.tool(PAGE, timeout=0.5).fetch(url)
    assert err.value.kind == "worker_timeout" and err.value.url == url
    assert time.monotonic() - start < 1.9, "well before the 2 s answer"


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
async def test_a_killed_worker_gives_worker_lost_then_is_replaced(faulty: tuple[SandboxServer, ...], how: str) -> None:
    slow = faulty[2]
    factory = SandboxUpstreams(slow.url, frozenset({host(slow)}), retry=RetryPolicy(attempts=1))
    async with RayToolPool(factory, workers=2) as tool_pool:
        first = await tool_pool.stats()
        doomed = tool_pool.workers[0]
        remote_pages = tool_pool.tool(PAGE, timeout=30)
        start = time.monotonic()
        in_flight = asyncio.gather(*(remote_pages.fetch(slow.url + ARTICLE) for _ in range(4)), return_exceptions=True)
        await asyncio.sleep(0.5)
        if how == "SIGKILL":
            os.kill(first[0].pid, signal.SIGKILL)  # the process dies as in a crash, without Ray's help
        else:
            ray.kill(doomed)
        outcomes = await in_flight
        lost = [o for o in outcomes if isinstance(o, FetchError)]
        assert len(lost) == 2 and {e.kind for e in lost} == {"worker_lost"}, outcomes
        assert tool_pool.lost == 2
        assert sum(getattr(o, "status", None) == 200 for o in outcomes) == 2
        assert time.monotonic() - start < 10
        assert tool_pool.replaced == 1 and tool_pool.workers[0] is not doomed
        refused = await asyncio.gather(
            *(remote_pages.fetch("http://10.0.0.1/x") for _ in range(4)), return_exceptions=True
        )
        assert {getattr(e, "kind", None) for e in refused} == {"ssrf_refused"}, "the workers answer again"
        stats = await tool_pool.stats()
        assert {s.pid for s in stats} - {first[1].pid} and first[0].pid not in {s.pid for s in stats}
        assert stats[0].fetch == 2, "the replacement served its share"


async def test_a_worker_serves_calls_without_ray(sandbox: SandboxServer) -> None:
    """The actor class is plain Python: one instance serves concurrent calls and counts them."""
    worker = ToolWorker(SandboxUpstreams(sandbox.url, frozenset({host(sandbox)})))
    try:
        hits = await asyncio.gather(*(worker.call(SEARCH.name, (q, 2)) for q in QUERIES[:3]))
        assert all(len(h) == 2 for h in hits)
        fault = await worker.call(PAGE.name, ("http://10.0.0.1/private",))
        assert isinstance(fault, FaultRecord) and fault.kind == "ssrf_refused"
        stats = await worker.stats()
        assert (stats.search, stats.fetch, stats.read) == (3, 1, 0)
    finally:
        await worker.close()
