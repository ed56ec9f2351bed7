"""browse_webpage over loopback: fetch → extract → segment → read with memory; errors become observations."""

from __future__ import annotations

import ast
import gzip
import uuid
from pathlib import Path

import httpx
import pytest

from researchrl.tools.base import EpisodeState, check_tool
from researchrl.tools.browse import BrowseTool, render_memory, url_list
from researchrl.tools.extract_pool import ExtractPool
from researchrl.tools.reader import ExtractiveReader, LLMReader, ReaderError, ReadRequest, ReadResult
from researchrl.types import SearchResult
from researchrl.web.http import FetchConfig, Fetcher
from researchrl.web.retry import RetryPolicy
from tests.loopback import LoopbackOnlyTransport

from .conftest import Reply, passage_texts

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
QUESTION = "If Gallu is a demon Lilu is what?"
SUB_QUERY = "Lilu mythology"
WIDTH = 1000  # every padded paragraph below is exactly one segment of this size
LILU = "A lilu or lilû is a masculine Akkadian word for a spirit, related to Alû, demon."
ALU = "In Akkadian and Sumerian mythology, it is associated with other demons like Gallu and Lilu."


@pytest.fixture(scope="module")
def passages() -> dict[str, str]:
    return passage_texts({"d1", "d5", "d7", "d9", "d3235"})  # demon algorithm, Lilu x2, Alû, an unrelated area code


def one_segment_each(*texts: str) -> str:
    """Pad each text to WIDTH characters ending in a newline, so segment(size=WIDTH) cuts between them."""
    assert all(len(t) < WIDTH for t in texts)
    return "".join(t + " " * (WIDTH - len(t) - 1) + "\n" for t in texts)


@pytest.fixture
async def fetcher(tool_site):
    transport = LoopbackOnlyTransport()
    config = FetchConfig(allow_hosts=tool_site.allow, retry=RetryPolicy(attempts=2, base_delay=0.01))
    fetcher = Fetcher(config, client=httpx.AsyncClient(transport=transport))
    yield fetcher
    await transport.aclose()


def state_for(*urls: str, query: str = SUB_QUERY) -> EpisodeState:
    state = EpisodeState(question=QUESTION)
    state.searches.append((query, [SearchResult(f"page {i}", url, "") for i, url in enumerate(urls)]))
    return state


def entries(observation) -> list[dict]:
    return ast.literal_eval(observation.text)


async def test_multi_segment_page_read_in_order_until_nothing_new_then_resumed(tool_site, fetcher, passages) -> None:
    text = one_segment_each(passages["d5"], passages["d9"], passages["d3235"], passages["d7"])
    url = tool_site.add_page("lilu.txt", text)
    tool = BrowseTool(fetcher, ExtractiveReader(), segment_chars=WIDTH)
    state = state_for(url)

    first = await tool({"url_list": [url]}, state)
    (entry,) = entries(first)
    assert first.errors == () and entry["url"] == url
    assert [i["page_number"] for i in entry["information"]] == [0, 1]  # segment 2 added nothing: stop there
    assert entry["information"][0]["page_summary"] == LILU
    assert ALU in entry["information"][1]["page_summary"]
    assert "area code" not in first.text.lower()  # only extracted facts, never raw page text
    assert state.read_pos[url] == 3
    assert state.memory[SUB_QUERY] == [i["page_summary"] for i in entry["information"]]

    second = entries(await tool({"url_list": [url]}, state))
    assert [i["page_number"] for i in second[0]["information"]] == [3]  # resumed after segment 2
    assert "chestnut" in second[0]["information"][0]["page_summary"]
    assert state.read_pos[url] == 4

    third = entries(await tool({"url_list": [url]}, state))
    assert third == [{"url": url, "information": []}]  # fully read: nothing new, no loop


async def test_max_segments_per_url_caps_reading(tool_site, fetcher, passages) -> None:
    text = one_segment_each(passages["d5"], passages["d9"], passages["d7"], passages["d1"])
    url = tool_site.add_page("all.txt", text)
    tool = BrowseTool(fetcher, ExtractiveReader(), segment_chars=WIDTH, max_segments_per_url=2)
    state = state_for(url)
    (entry,) = entries(await tool({"url_list": [url]}, state))
    assert [i["page_number"] for i in entry["information"]] == [0, 1]
    assert state.read_pos[url] == 2


class AlwaysMore:
    """A reader that always finds something and always asks for the next page (the official infinite-loop case)."""

    def __init__(self) -> None:
        self.calls = 0

    async def read(self, req: ReadRequest) -> ReadResult:
        self.calls += 1
        return ReadResult(info=f"fact {req.page_index}", page_down=True)


async def test_a_reader_that_always_says_yes_cannot_loop(tool_site, fetcher) -> None:
    url = tool_site.add_page("short.txt", one_segment_each("one", "two", "three"))
    reader = AlwaysMore()
    tool = BrowseTool(fetcher, reader, segment_chars=WIDTH, max_segments_per_url=10)
    (entry,) = entries(await tool({"url_list": [url]}, state_for(url)))
    assert len(entry["information"]) == 3 and reader.calls == 3


async def test_failures_become_error_entries(tool_site, fetcher, passages) -> None:
    good = tool_site.add_page("good.txt", passages["d5"])
    missing = f"{tool_site.base_url}/p/missing.txt"
    private, metadata = "http://10.0.0.1/secret", "http://169.254.169.254/latest/meta-data/"
    tool = BrowseTool(fetcher, ExtractiveReader(), segment_chars=WIDTH)
    observation = await tool({"url_list": [good, missing, private, metadata]}, state_for(good, missing))
    got = entries(observation)
    assert [e["url"] for e in got] == [good, missing, private, metadata]
    assert got[0]["information"][0]["page_summary"] == LILU
    assert got[1:] == [
        {"url": missing, "information": [], "error": "http_404"},
        {"url": private, "information": [], "error": "ssrf_refused"},
        {"url": metadata, "information": [], "error": "ssrf_refused"},
    ]
    assert observation.errors == ("http_404", "ssrf_refused", "ssrf_refused")
    assert sorted(tool_site.page_paths) == ["good.txt", "missing.txt"]  # 404 not retried; private never contacted


async def test_memory_is_shared_by_the_urls_of_one_search_query(tool_site, fetcher, passages) -> None:
    a = tool_site.add_page("a.txt", passages["d5"] + "\n" + passages["d9"])
    b = tool_site.add_page("b.txt", passages["d9"] + "\n" + passages["d7"])
    c = tool_site.add_page("c.txt", passages["d9"])
    state = state_for(a, b)
    state.searches.append(("Alû demon", [SearchResult("c", c, "")]))
    tool = BrowseTool(fetcher, ExtractiveReader())  # one segment per page
    observation = await tool({"url_list": [a, b, c]}, state)
    got = {e["url"]: " ".join(i["page_summary"] for i in e["information"]) for e in entries(observation)}
    assert ALU in got[a]
    assert ALU not in got[b] and "Lilu" in got[b]  # b was read with a's facts in memory
    assert ALU in got[c]  # another query, another memory
    assert set(state.memory) == {SUB_QUERY, "Alû demon"}
    assert len(state.memory[SUB_QUERY]) == 2


async def test_html_page_is_extracted_before_reading(tool_site, fetcher) -> None:
    source = DATA / "html" / "mozilla_readability_test_pages" / "pages" / "wikipedia" / "source.html.gz"
    if not source.is_file():
        pytest.skip("shared data not present")
    url = tool_site.add_page("mozilla.html", gzip.decompress(source.read_bytes()).decode(), "text/html; charset=utf-8")
    state = EpisodeState(question="When was the Mozilla Foundation founded?")
    (entry,) = entries(await BrowseTool(fetcher, ExtractiveReader())({"url_list": [url]}, state))
    summary = entry["information"][0]["page_summary"]
    assert "Mozilla Foundation" in summary and "<" not in summary
    assert state.memory[state.question]  # a URL never seen in a search falls under the question itself


class RankedSpy:
    """The extractive reader, counting the segments it was handed already ranked."""

    def __init__(self) -> None:
        self.reader, self.reads, self.ranked = ExtractiveReader(), 0, 0

    async def read(self, req: ReadRequest) -> ReadResult:
        self.reads += 1
        self.ranked += req.ranked is not None
        return await self.reader.read(req)


async def test_pages_ranked_by_the_pool_read_as_in_this_process(tool_site, fetcher, passages) -> None:
    pages = DATA / "html" / "mozilla_readability_test_pages" / "pages"
    if not pages.is_dir():
        pytest.skip("shared data not present")
    run = uuid.uuid4().hex  # URLs no earlier test extracted, so the pool's first calls extract
    html = {name: gzip.decompress((pages / name / "source.html.gz").read_bytes()).decode()
            for name in ("wikipedia", "guardian-1", "lemonde-1")}
    urls = {name: tool_site.add_page(f"{run}/{name}.html", text, "text/html") for name, text in html.items()}
    lilu = tool_site.add_page(f"{run}/lilu.txt", one_segment_each(passages["d5"], passages["d9"], passages["d7"]))
    missing = f"{tool_site.base_url}/p/{run}/missing.html"
    calls = [[urls["wikipedia"], urls["guardian-1"], lilu, urls["lemonde-1"], missing],  # extracted in the pool
             [urls["wikipedia"], urls["lemonde-1"], lilu], [urls["wikipedia"]]]  # resumed; cached text, ranked there

    async def browse(tool: BrowseTool) -> tuple[list[tuple[str, tuple[str, ...]]], EpisodeState]:
        state = state_for(urls["wikipedia"], urls["guardian-1"], lilu, query="Mozilla Foundation founded Lilu demon")
        state.searches.append(("Élysée président économie réforme", [SearchResult("", urls["lemonde-1"], "")]))
        observations = [await tool({"url_list": call}, state) for call in calls]
        return [(o.text, o.errors) for o in observations], state

    pool = ExtractPool(1)
    pooled = RankedSpy()
    try:
        tool = BrowseTool(fetcher, pooled, segment_chars=3000, max_segments_per_url=3, extract=pool.extract,
                          extract_and_rank=pool.extract_and_rank)
        in_pool, pool_state = await browse(tool)
    finally:
        await pool.aclose()
    here = RankedSpy()
    in_process, state = await browse(BrowseTool(fetcher, here, segment_chars=3000, max_segments_per_url=3))
    assert in_pool == in_process
    assert (pool_state.memory, pool_state.read_pos) == (state.memory, state.read_pos)
    assert pooled.ranked == pooled.reads == here.reads > 10 and here.ranked == 0
    assert pool.submitted == 8  # one task a page and browse: 4 pages extracted, then 4 cached texts ranked
    assert sum(len(entry["information"]) for text, _ in in_pool for entry in ast.literal_eval(text)) > 5


class FailingReader:
    async def read(self, req: ReadRequest) -> ReadResult:
        raise ReaderError("timeout", "reader endpoint timed out")


async def test_reader_failure_is_an_error_entry(tool_site, fetcher) -> None:
    url = tool_site.add_page("x.txt", "Lilu is a spirit.")
    state = state_for(url)
    observation = await BrowseTool(fetcher, FailingReader())({"url_list": [url]}, state)
    assert entries(observation) == [{"url": url, "information": [], "error": "reader_timeout"}]
    assert observation.errors == ("reader_timeout",)
    assert url not in state.read_pos  # the segment will be read again next time


GOOD_READ = f"<extracted_info>{LILU}</extracted_info><page_down>no</page_down>"


@pytest.mark.parametrize(
    ("first_reply", "first_entry", "errors"),
    [
        ("Sure! The page says a lot.", {"information": [], "error": "reader_unparseable"}, ("reader_unparseable",)),
        (GOOD_READ, {"information": [{"page_number": 0, "page_summary": LILU}]}, ()),
    ],
)
async def test_an_unparseable_reader_reply_is_a_counted_error_and_the_browse_goes_on(
    tool_site, fetcher, first_reply: str, first_entry: dict, errors: tuple  # noqa: ANN001
) -> None:
    first, second = tool_site.add_page("first.txt", LILU), tool_site.add_page("second.txt", ALU)
    tool_site.replies = [Reply(first_reply), Reply(f"<extracted_info>{ALU}</extracted_info><page_down>no</page_down>")]
    reader = LLMReader(f"{tool_site.base_url}/v1", "reader-test", timeout=5, retry=RetryPolicy(attempts=3, base_delay=0.01))
    observation = await BrowseTool(fetcher, reader)({"url_list": [first, second]}, state_for(first, second))
    await reader.aclose()
    assert entries(observation) == [{"url": first, **first_entry},
                                    {"url": second, "information": [{"page_number": 0, "page_summary": ALU}]}]
    assert observation.errors == errors
    assert len(tool_site.chat_requests) == 2  # the unparseable reply was not asked again


@pytest.mark.parametrize("arguments", [{}, {"url_list": []}, {"url_list": [1, None, " "]}, {"url_list": {"a": 1}}])
async def test_bad_arguments_are_an_observation(fetcher, arguments) -> None:
    observation = await BrowseTool(fetcher, ExtractiveReader())(arguments, EpisodeState(question=QUESTION))
    assert observation.errors == ("bad_arguments",) and observation.tool == "browse_webpage"


async def test_url_list_is_deduplicated_and_capped(tool_site, fetcher) -> None:
    urls = [f"{tool_site.base_url}/p/none{i}.txt" for i in range(7)]
    observation = await BrowseTool(fetcher, ExtractiveReader(), max_urls=5)({"url_list": urls[:1] + urls}, state_for())
    assert [e["url"] for e in entries(observation)] == urls[:5]
    assert len(tool_site.page_paths) == 5
    assert url_list(" http://a/ ", 5) == ["http://a/"]


def test_render_memory_official_block() -> None:
    assert render_memory("q", []) == ""
    assert render_memory("q", ["a", "b"]) == "<sub_question>q</sub_question>\n<useful_info>a\n\nb</useful_info>\n"


def test_browse_tool_passes_the_conformance_check(fetcher) -> None:
    check_tool(BrowseTool(fetcher, ExtractiveReader()))
