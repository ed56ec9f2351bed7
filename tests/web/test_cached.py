"""Cache, record and replay in front of the real sandbox web (Serper-compatible search, wiki pages) and an LLM reader.

Upstream requests are counted where they arrive: the sandbox's /_faults endpoint and the chat server's log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from researchrl.errors import UserError
from researchrl.sandbox.config import SandboxConfig, shared_data_dir
from researchrl.sandbox.faults import FaultConfig
from researchrl.sandbox.server import SandboxServer
from researchrl.search.base import SearchError
from researchrl.search.serper import SerperSearch
from researchrl.tools.base import EpisodeState
from researchrl.tools.browse import BrowseTool
from researchrl.tools.reader import ExtractiveReader, LLMReader, ReaderError, ReadRequest, ReadResult
from researchrl.tools.web_search import WebSearchTool
from researchrl.types import SearchResult
from researchrl.web.cache import MemoryStore, SingleFlight, Store
from researchrl.web.redis_store import RedisStore
from researchrl.web.sqlite_store import SQLiteStore
from researchrl.web.cached import Cached, ReplayMiss
from researchrl.web.errors import FetchError
from researchrl.web.http import Fetcher, FetchConfig
from researchrl.web.kinds import PAGE, READ, SEARCH, normalize_query
from researchrl.web.retry import RetryPolicy
from tests.loopback import LoopbackOnlyTransport, serve_app

if not (shared_data_dir() / "wiki" / "passages.jsonl").exists():
    pytest.skip("needs ../shared/data (or $RESEARCHRL_SHARED_DATA)", allow_module_level=True)

ONCE = RetryPolicy(attempts=1)  # faults surface at once instead of after backoff
READER_REPLY = (
    "<extracted_info>Demon Dice is a collectible dice game created by Lester Smith and Tim Brown.</extracted_info>\n"
    "<page_down>no</page_down>\n<short_summary>Who made Demon Dice.</short_summary>"
)
QUESTION = "Who created the game Demon Dice?"


class Hits:
    """A HitCounter that remembers every hit it is told about (what the cost ledger would count)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def hit(self, kind: str, provider: str) -> None:
        self.seen.append((kind, provider))


class ChatSite:
    """A loopback OpenAI-compatible chat endpoint with a fixed reader-format reply; 400 for prompts saying FAIL-ME."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.url = ""

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            body = await request.json()
            with self.lock:
                self.requests += 1
            if "FAIL-ME" in body["messages"][0]["content"]:
                return JSONResponse({"error": {"message": "bad request", "type": "test"}}, status_code=400)
            message = {"role": "assistant", "content": READER_REPLY}
            return JSONResponse({
                "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            })

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])

    def reader(self) -> LLMReader:
        return LLMReader(base_url=f"{self.url}/v1", model="reader-test", retry=ONCE, timeout=10)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    """A fault-free sandbox shared by the tests that count its requests as deltas."""
    with SandboxServer() as server:
        yield server


@pytest.fixture(scope="module")
def faulty() -> Iterator[SandboxServer]:
    """A sandbox whose search API and pages always answer 500."""
    with SandboxServer(SandboxConfig(faults=FaultConfig(rate_500=1.0))) as server:
        yield server


@pytest.fixture
def chat() -> Iterator[ChatSite]:
    site = ChatSite()
    with serve_app(site.app()) as url:
        site.url = url
        yield site


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An empty store of each kind."""
    if request.param == "memory":
        opened: Store = MemoryStore()
    elif request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "cache.db")
    else:
        opened = RedisStore(request.getfixturevalue("redis_url"), prefix=f"cached-{uuid.uuid4().hex}:")
    yield opened
    await opened.aclose()


def served(server: SandboxServer) -> int:
    """Search and page requests the sandbox has answered so far, from its /_faults endpoint."""
    return httpx.get(f"{server.url}/_faults", timeout=5).json()["requests"]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """One HTTP client for the test's search and page upstreams; it can reach 127.0.0.1 only."""
    async with loopback_client() as http:
        yield http


def loopback_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=LoopbackOnlyTransport(), follow_redirects=False, timeout=10)


def serper(server: SandboxServer, client: httpx.AsyncClient) -> SerperSearch:
    return SerperSearch(api_key="sandbox", base_url=server.url, retry=ONCE, client=client)


def fetcher(client: httpx.AsyncClient, *servers: SandboxServer) -> Fetcher:
    allow = frozenset(f"{s.host}:{s.port}" for s in servers)
    return Fetcher(FetchConfig(allow_hosts=allow, retry=ONCE), client=client)


async def test_concurrent_identical_searches_make_one_upstream_request(
    sandbox: SandboxServer, store: Store, client: httpx.AsyncClient
) -> None:
    hits = Hits()
    search = Cached(SEARCH, serper(sandbox, client), store, "cache", counter=hits)
    before = served(sandbox)
    results = await asyncio.gather(*(search.search("Demon Dice collectible game", 5) for _ in range(16)))
    assert served(sandbox) - before == 1
    assert results[0] and results[0][0].title == "Demon Dice" and all(r == results[0] for r in results)
    assert (search.upstream_calls, search.misses, search.joins, search.hits) == (1, 1, 15, 0)
    assert await search.search("Demon Dice collectible game", 5) == results[0]  # later: from the store
    assert served(sandbox) - before == 1 and search.hits == 1
    assert hits.seen == [("search", "serper")] * 16


async def test_normalized_queries_share_one_entry(sandbox: SandboxServer, client: httpx.AsyncClient) -> None:
    search = Cached(SEARCH, serper(sandbox, client), MemoryStore(), "cache")
    before = served(sandbox)
    first = await search.search("Demon Dice", 3)
    for variant in ("  demon   DICE ", "ＤＥＭＯＮ Ｄｉｃｅ", "Demon\tDice\n"):  # case, spacing, full-width forms
        assert await search.search(variant, 3) == first
    assert served(sandbox) - before == 1
    await search.search("Demon Dice", 4)  # another result count is another question
    assert served(sandbox) - before == 2 and search.upstream_calls == 2


async def test_queries_that_differ_in_meaning_keep_their_own_entries(
    sandbox: SandboxServer, client: httpx.AsyncClient
) -> None:
    store = MemoryStore()
    search = Cached(SEARCH, serper(sandbox, client), store, "cache")
    assert normalize_query("10⁶ Demon") != normalize_query("106 demon")  # NFKC would make both "106 demon"
    before = served(sandbox)
    for query in ("10⁶ Demon", "106 Demon", "x² Dice", "x2 Dice"):
        await search.search(query, 3)
    for variant in (" 10⁶  DEMON", "１０⁶ ｄｅｍｏｎ", "X²\tdice"):  # case, spacing and full-width forms still merge
        await search.search(variant, 3)
    assert served(sandbox) - before == 4 and search.upstream_calls == 4 and search.hits == 3
    assert (await store.stats()).entries == 4


async def test_a_page_body_served_under_two_urls_is_stored_once(
    sandbox: SandboxServer, store: Store, client: httpx.AsyncClient
) -> None:
    pages = Cached(PAGE, fetcher(client, sandbox), store, "cache")
    urls = [f"{sandbox.url}/wiki/Demon_Dice", f"{sandbox.url}/wiki/Demon%20Dice"]
    before = served(sandbox)
    first, second = [await pages.fetch(url) for url in urls]
    assert first.text == second.text and "Lester Smith" in first.text and first.url != second.url
    body = len(first.text.encode())
    stats = await store.stats()  # type: ignore[attr-defined]
    assert stats.entries == 3 and body < stats.bytes < body + 1000  # two small URL entries, one body
    assert [await pages.fetch(url) for url in urls] == [first, second]
    assert served(sandbox) - before == 2 and pages.hits == 2


async def test_live_mode_is_a_plain_pass_through(sandbox: SandboxServer, client: httpx.AsyncClient) -> None:
    store = MemoryStore()
    search = Cached(SEARCH, serper(sandbox, client), store, "live")
    before = served(sandbox)
    for _ in range(3):
        await search.search("Demon Dice", 3)
    assert served(sandbox) - before == 3 and search.upstream_calls == 3
    assert (await store.stats()).entries == 0


async def test_cache_mode_expires_entries_and_never_stores_faults(
    sandbox: SandboxServer, faulty: SandboxServer, client: httpx.AsyncClient
) -> None:
    store = MemoryStore()
    search = Cached(SEARCH, serper(sandbox, client), store, "cache", ttl=0.2)
    before = served(sandbox)
    await search.search("Demon Dice", 3)
    await search.search("Demon Dice", 3)
    await asyncio.sleep(0.3)
    await search.search("Demon Dice", 3)
    assert served(sandbox) - before == 2
    failing = Cached(SEARCH, serper(faulty, client), store, "cache")
    before = served(faulty)
    for _ in range(2):
        with pytest.raises(SearchError) as caught:
            await failing.search("Tim Brown", 3)
        assert caught.value.kind == "http_500"
    assert served(faulty) - before == 2  # a transient fault is asked again, not pinned for a week


async def test_llm_reads_are_cached_and_extractive_reads_pass_through(chat: ChatSite) -> None:
    reader = Cached(READ, chat.reader(), MemoryStore(), "cache")
    request = ReadRequest(QUESTION, "Demon Dice", "", "Demon Dice was made by Lester Smith.", 1, 2, url="http://x/a")
    results = await asyncio.gather(*(reader.read(request) for _ in range(4)))
    assert results == [ReadResult(info=READER_REPLY.split("</")[0].removeprefix("<extracted_info>"), page_down=False)] * 4
    assert chat.requests == 1
    await reader.read(ReadRequest(QUESTION, "Demon Dice", "<useful_info>known</useful_info>", request.segment, 1, 2,
                                  url="http://x/a"))
    assert chat.requests == 2  # another memory is another prompt
    assert reader.cache_id == chat.reader().cache_id and "reader-test" in reader.cache_id
    assert "s3cret" not in LLMReader(base_url="https://user:s3cret@llm.example/v1", model="m").cache_id
    extractive = Cached(READ, ExtractiveReader(), MemoryStore(), "replay")  # local and deterministic: never cached
    assert await extractive.read(request) == await ExtractiveReader().read(request)
    await reader.aclose()


def _error_fields(err: Exception) -> tuple[object, ...]:
    return type(err), str(err), vars(err)


async def _record_and_collect(store: Store, search: SerperSearch, bad_search: SerperSearch, pages: Fetcher,
                              reader: LLMReader, urls: list[str], bad_url: str, mode: str) -> list[object]:
    """Every answer (value or error) of the same calls, through wrappers in `mode` (upstreams None in replay)."""
    replay = mode == "replay"
    flight = SingleFlight()
    cached_search = Cached(SEARCH, None if replay else search, store, mode, flight=flight, provider="serper",
                           cache_id=search.cache_id)  # a replay names the recorded endpoint
    cached_bad = Cached(SEARCH, None if replay else bad_search, store, mode, flight=flight, provider="serper",
                        cache_id=bad_search.cache_id)
    cached_pages = Cached(PAGE, None if replay else pages, store, mode, flight=flight)
    cached_reader = Cached(READ, None if replay else reader, store, mode, flight=flight, cache_id=reader.cache_id)
    answers: list[object] = []
    for call in (
        lambda: cached_search.search("Demon Dice collectible game", 5),
        lambda: cached_search.search("Lester Smith game designer", 5),
        lambda: cached_bad.search("a query the faulty sandbox refuses", 5),
        lambda: cached_pages.fetch(urls[0]),
        lambda: cached_pages.fetch(urls[1]),
        lambda: cached_pages.fetch(bad_url),
        lambda: cached_reader.read(ReadRequest(QUESTION, "FAIL-ME", "", "some text", 1, 1, url=urls[0])),
    ):
        try:
            answers.append(await call())
        except (SearchError, FetchError, ReaderError) as err:
            answers.append(_error_fields(err))
    state = EpisodeState(question=QUESTION)
    state.searches.append(("Demon Dice collectible game", answers[0]))  # type: ignore[arg-type]
    browse = BrowseTool(cached_pages, cached_reader)
    observation = await browse({"url_list": [urls[0], urls[1], bad_url]}, state)
    answers.append(observation)
    answers.append(state.memory)
    if replay:
        assert (cached_search.upstream_calls, cached_pages.upstream_calls, cached_reader.upstream_calls) == (0, 0, 0)
    return answers


async def test_record_then_replay_offline_gives_identical_results_and_errors(tmp_path: Path) -> None:
    chat = ChatSite()
    path = tmp_path / "recording.db"
    with serve_app(chat.app()) as chat_url:
        chat.url = chat_url
        reader = chat.reader()
        async with SandboxServer() as clean, SandboxServer(SandboxConfig(faults=FaultConfig(rate_500=1.0))) as bad:
            urls = [f"{clean.url}/wiki/Demon_Dice", f"{clean.url}/wiki/No_Such_Article"]  # the second is a real 404
            store = SQLiteStore(path)
            async with loopback_client() as client:
                search, bad_search, pages = serper(clean, client), serper(bad, client), fetcher(client, clean, bad)
                recorded = await _record_and_collect(
                    store, search, bad_search, pages, reader, urls, f"{bad.url}/wiki/Demon_Dice", "record"
                )
            await store.aclose()
            await reader.aclose()
        assert chat.requests == 2  # the FAIL-ME read, then one read of the Demon Dice page
    assert recorded[2][0] is SearchError and "http_500" in recorded[2][1]  # type: ignore[index]
    assert recorded[4][0] is FetchError and recorded[4][2]["kind"] == "http_404"  # type: ignore[index]
    assert recorded[5][2]["kind"] == "http_500" and recorded[6][2]["kind"] == "http_400"  # type: ignore[index]
    assert "Lester Smith" in recorded[7].text and "'error': 'http_404'" in recorded[7].text  # type: ignore[attr-defined]

    # Every server is gone: replay answers from the file alone, value for value and error for error.
    store = SQLiteStore(path)
    try:
        replayed = await _record_and_collect(
            store, search, bad_search, pages, reader, urls, recorded[5][2]["url"], "replay"  # type: ignore[index]
        )
    finally:
        await store.aclose()
    assert replayed == recorded


async def test_a_replay_miss_names_the_key_and_is_not_swallowed_by_tools() -> None:
    store = MemoryStore()
    search = Cached(SEARCH, None, store, "replay", provider="serper")
    with pytest.raises(ReplayMiss) as caught:
        await search.search("Who wrote  X", 10)
    message = str(caught.value)
    assert 'search serper "who wrote x" num=10' in message and "--web record" in message
    assert not isinstance(caught.value, SearchError) and isinstance(caught.value, UserError)  # recording fixes it
    with pytest.raises(ReplayMiss):  # the tool turns SearchError into an observation, but not this
        await WebSearchTool(search)({"query": ["who wrote x"]}, EpisodeState(question="q"))
    with pytest.raises(ReplayMiss, match="page http://127.0.0.1:9/nowhere"):
        await Cached(PAGE, None, store, "replay").fetch("http://127.0.0.1:9/nowhere")
    reader = Cached(READ, None, store, "replay", cache_id="llm:reader-test")
    request = ReadRequest("q", "sub", "", "segment", 2, 3, url="http://127.0.0.1:9/page")
    with pytest.raises(ReplayMiss, match=r'read llm:reader-test http://127.0.0.1:9/page segment 2/3 sub_query "sub"'):
        await reader.read(request)
    with pytest.raises(ValueError, match="provider="):
        Cached(SEARCH, None, store, "replay")
    with pytest.raises(ValueError, match="upstream"):
        Cached(PAGE, None, store, "cache")


# ---------------------------------------------------------------- keys: endpoint and version


async def test_one_provider_name_at_two_endpoints_keeps_two_sets_of_answers(tmp_path: Path) -> None:
    """Two evals on one cache file, each with its own sandbox (same provider name, another port): each gets its own."""
    async with SandboxServer() as first, SandboxServer() as second, loopback_client() as client:
        answers = {}
        for _ in range(2):  # the second round is answered by the shared file
            for server in (first, second):
                store = SQLiteStore(tmp_path / "shared.db")  # as another process opens the file
                search = Cached(SEARCH, serper(server, client), store, "cache")
                answers.setdefault(server.url, []).append((await search.search("Demon Dice", 3), search.hits))
                await store.aclose()
        for server in (first, second):
            (fresh, _), (again, hits) = answers[server.url]
            assert fresh == again and hits == 1 and fresh[0].url.startswith(server.url + "/wiki/")
            assert served(server) == 1
        assert serper(first, client).cache_id == f"serper@http://127.0.0.1:{first.port}"


async def test_a_key_version_bump_misses_the_old_entries(sandbox: SandboxServer, client: httpx.AsyncClient) -> None:
    store = MemoryStore()
    old = Cached(SEARCH, serper(sandbox, client), store, "cache")
    await old.search("Demon Dice", 3)
    assert SEARCH.codec is not None and SEARCH.codec.version == 2
    bumped = dataclasses.replace(SEARCH, codec=dataclasses.replace(SEARCH.codec, version=3))
    new = Cached(bumped, serper(sandbox, client), store, "cache")
    before = served(sandbox)
    await new.search("Demon Dice", 3)
    await old.search("Demon Dice", 3)
    assert served(sandbox) - before == 1 and (new.misses, old.hits) == (1, 1)


# ---------------------------------------------------------------- callers behind a failed flight


class Flaky:
    """A search backend whose calls take a moment and fail with the given kinds, in order, then answer."""

    name = "flaky"
    cache_id = "flaky@http://127.0.0.1:9"

    def __init__(self, *kinds: str):
        self.kinds = list(kinds)
        self.calls = 0

    async def search(self, query: str, num: int = 10) -> list[SearchResult]:
        self.calls += 1
        await asyncio.sleep(0.05)  # long enough for every caller to join
        if self.kinds:
            raise SearchError(self.name, self.kinds.pop(0), "injected")
        return [SearchResult("T", "http://127.0.0.1:9/t", "S")]


async def gather_outcomes(search: Cached, callers: int) -> list[object]:
    """`callers` identical searches at once; each one's results or error kind."""
    outcomes = await asyncio.gather(*(search.search("q") for _ in range(callers)), return_exceptions=True)
    return [o.kind if isinstance(o, SearchError) else o for o in outcomes]


async def test_only_the_leader_of_a_failed_flight_gets_its_transient_error() -> None:
    upstream, hits = Flaky("timeout"), Hits()
    search = Cached(SEARCH, upstream, MemoryStore(), "cache", counter=hits)
    outcomes = await gather_outcomes(search, 16)
    assert outcomes.count("timeout") == 1 and all(isinstance(o, list) and o for o in outcomes if o != "timeout")
    assert upstream.calls == 2 and (search.rejoined, search.joins) == (15, 14)  # one of the 15 led the second flight
    assert len(hits.seen) == 14  # a rejoined caller is counted once, by how it was answered


@pytest.mark.parametrize("kind", ["http_404", "auth", "circuit_open"])
async def test_an_error_that_another_call_would_repeat_is_shared(kind: str) -> None:
    upstream = Flaky(kind)
    search = Cached(SEARCH, upstream, MemoryStore(), "cache")
    assert await gather_outcomes(search, 8) == [kind] * 8 and upstream.calls == 1 and search.rejoined == 0


async def test_rejoins_are_bounded_per_caller_and_never_hang() -> None:
    upstream = Flaky(*["http_500"] * 100)
    search = Cached(SEARCH, upstream, MemoryStore(), "cache", rejoins=2)
    outcomes = await asyncio.wait_for(gather_outcomes(search, 16), 5)
    assert outcomes == ["http_500"] * 16
    assert upstream.calls == 3  # the flight everyone joined, then two more: the followers' budget is spent


@pytest.mark.parametrize("mode", ["record", "live"])
async def test_outside_cache_mode_a_failed_flight_is_not_flown_again(mode: str) -> None:
    upstream = Flaky("timeout")
    search = Cached(SEARCH, upstream, MemoryStore(), mode)  # type: ignore[arg-type]
    outcomes = await gather_outcomes(search, 4)
    if mode == "record":  # the recording holds the fault, so a replay reproduces it for every caller
        assert outcomes == ["timeout"] * 4 and upstream.calls == 1
    else:  # live: no flights at all, each caller calls upstream
        assert outcomes.count("timeout") == 1 and upstream.calls == 4
