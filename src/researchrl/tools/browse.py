"""browse_webpage: fetch → extract → segment → read with per-query memory; only extracted facts reach the policy.

The observation has the official shape, a Python repr of
    [{'url': url, 'information': [{'page_number': p, 'page_summary': info}, ...]}, ...]
with `page_number` the 0-based segment index (as the released model saw it). A URL that failed gets
'information': [] and an 'error' naming the kind (http_404, ssrf_refused, captcha, ...), which also
goes into Observation.errors; raw page text never goes back.

Memory: facts read under one search query are shared by every URL found by that query (the paper's
"short-term memory per query"); re-browsing a URL resumes at the first segment not yet read.
Fetching runs concurrently for all URLs; URLs of the same sub-query are then read one after the
other, in the order given, so each sees what the previous ones found (no fact is extracted twice and
a run is reproducible), while different sub-queries are read concurrently.

With the extractive reader a process pool may extract a page and rank its segments' sentences in one task
(`extract_and_rank`, tools/extract_pool.py); the reader then only drops what memory already holds, so the
observation is the same as when it ranks them here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from researchrl.prompts import BROWSE_WEBPAGE_SCHEMA
from researchrl.tools.base import EpisodeState
from researchrl.tools.pages import SEGMENT_CHARS, extract_text, segment
from researchrl.tools.reader import Reader, ReaderError, ReadRequest
from researchrl.types import Observation, Page
from researchrl.web.errors import FetchError


class PageSource(Protocol):
    """Where pages come from: the web Fetcher, the sandbox, a local corpus; raises FetchError on faults."""

    async def fetch(self, url: str) -> Page:
        """The page at `url`."""
        ...


# (page, question, sub-query, segment numbers, segment size) -> the page's text, and those segments' ranked sentences
ExtractAndRank = Callable[[Page, str, str, range, int], Awaitable[tuple[str, dict[int, tuple[str, ...]]]]]


@dataclass(frozen=True)
class _Loaded:
    """A page's segments, and the extractive reader's ranked sentences of those a pool ranked ahead (by number)."""

    segments: list[str]
    ranked: dict[int, tuple[str, ...]]


def render_memory(sub_query: str, memory: list[str]) -> str:
    """The reader's "context so far" for one sub-query, in the official block format ("" when empty)."""
    if not memory:
        return ""
    useful = "\n\n".join(memory)
    return f"<sub_question>{sub_query}</sub_question>\n<useful_info>{useful}</useful_info>\n"


def url_list(value: object, cap: int) -> list[str]:
    """The distinct URL strings of `value` in order, at most `cap` (a lone string counts as one URL)."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    urls = [item.strip() for item in items if isinstance(item, str) and item.strip()]
    return list(dict.fromkeys(urls))[:cap]


async def _extract_in_thread(page: Page) -> str:
    """Main-text extraction off the event loop (CPU work, mostly in lxml)."""
    return await asyncio.to_thread(extract_text, page)


class BrowseTool:
    """The browse_webpage tool: stateless itself, all reading state lives in the EpisodeState."""

    name = "browse_webpage"
    schema = BROWSE_WEBPAGE_SCHEMA

    def __init__(
        self,
        pages: PageSource,
        reader: Reader,
        segment_chars: int = SEGMENT_CHARS,
        max_segments_per_url: int = 5,
        max_urls: int = 5,
        extract: Callable[[Page], Awaitable[str]] | None = None,
        extract_and_rank: ExtractAndRank | None = None,
    ):
        self.pages = pages
        self.reader = reader
        self.extract = extract or _extract_in_thread  # a Ray pool passes its workers' extractor
        self.extract_and_rank = extract_and_rank  # given with the extractive reader and a local pool; else `extract`
        self.segment_chars = segment_chars  # official viewport page: 40 960 characters
        self.max_segments_per_url = max_segments_per_url  # reader calls per URL per browse (official: unbounded)
        self.max_urls = max_urls  # URLs read per call; the rest of url_list is ignored

    async def __call__(self, arguments: dict[str, list[str]], state: EpisodeState) -> Observation:
        """Read every requested URL and report what was new, per URL, in request order."""
        urls = url_list(arguments.get("url_list"), self.max_urls)
        if not urls:
            return Observation(self.name, "Error: url_list must be a non-empty list of URLs.", ("bad_arguments",))
        sub_queries = [state.sub_query_for(url) for url in urls]
        loaded = await asyncio.gather(*(
            self._load(url, state.question, sub_query, state.read_pos.get(url, 0))
            for url, sub_query in zip(urls, sub_queries)
        ))
        by_query: dict[str, list[int]] = {}
        for i, sub_query in enumerate(sub_queries):
            by_query.setdefault(sub_query, []).append(i)
        entries: list[dict[str, Any]] = [{} for _ in urls]

        async def read_in_order(sub_query: str, indexes: list[int]) -> None:
            for i in indexes:
                entries[i] = await self._read_url(urls[i], loaded[i], sub_query, state)

        await asyncio.gather(*(read_in_order(q, indexes) for q, indexes in by_query.items()))
        errors = tuple(entry["error"] for entry in entries if "error" in entry)
        return Observation(self.name, repr(entries), errors)

    async def _load(self, url: str, question: str, sub_query: str, start: int) -> _Loaded | FetchError:
        """The page's segments (those a read from `start` may reach ranked ahead, given extract_and_rank), or the
        fault that kept us from them."""
        ranked: dict[int, tuple[str, ...]] = {}
        try:
            page = await self.pages.fetch(url)
            if self.extract_and_rank is None:
                text = await self.extract(page)
            else:
                window = range(start, start + self.max_segments_per_url)
                text, ranked = await self.extract_and_rank(page, question, sub_query, window, self.segment_chars)
        except FetchError as err:
            return err
        segments = segment(text, self.segment_chars)
        return _Loaded(segments, ranked) if segments else FetchError(url, "empty_page", "no readable text on the page")

    async def _read_url(
        self, url: str, loaded: _Loaded | FetchError, sub_query: str, state: EpisodeState
    ) -> dict[str, Any]:
        """Read segments from where this URL stopped until the reader stops, the page ends, or the cap."""
        if isinstance(loaded, FetchError):
            return {"url": url, "information": [], "error": loaded.kind}
        memory = state.memory.setdefault(sub_query, [])
        information: list[dict[str, Any]] = []
        start = state.read_pos.get(url, 0)
        segments = loaded.segments
        for pos in range(start, min(len(segments), start + self.max_segments_per_url)):
            request = ReadRequest(
                question=state.question,
                sub_query=sub_query,
                memory=render_memory(sub_query, memory),
                segment=segments[pos],
                page_index=pos + 1,
                total_pages=len(segments),
                url=url,
                ranked=loaded.ranked.get(pos),
            )
            try:
                result = await self.reader.read(request)
            except ReaderError as err:
                return {"url": url, "information": information, "error": f"reader_{err.kind}"}
            state.read_pos[url] = pos + 1
            if result.info:
                memory.append(result.info)
                information.append({"page_number": pos, "page_summary": result.info})
            if not result.page_down:
                break
        return {"url": url, "information": information}
