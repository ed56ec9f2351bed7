"""The web_search tool: up to 3 queries, top-10 results each, rendered the way the official tool server returns them."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from researchrl.prompts import WEB_SEARCH_SCHEMA
from researchrl.search.base import SearchBackend, SearchError
from researchrl.tools.base import EpisodeState
from researchrl.types import Observation, SearchResult


@dataclass
class WebSearchTool:
    """Searches every query concurrently; a failed query becomes an error entry the policy can see."""

    backend: SearchBackend
    top_k: int = 10  # paper: top-10 per query
    max_queries: int = 3  # official server: queries beyond the first 3 are ignored
    style: Literal["deepresearcher", "search_r1"] = "deepresearcher"
    snippet_chars: int | None = None  # cut snippets to keep small-model contexts short (None: as the engine gave them)
    name: str = "web_search"

    @property
    def schema(self) -> dict[str, Any]:
        """The paper's OpenAI function schema."""
        return WEB_SEARCH_SCHEMA

    async def __call__(self, arguments: dict[str, list[str]], state: EpisodeState) -> Observation:
        """Run the queries, remember their hits for browsing, and render the observation."""
        queries = list(dict.fromkeys(arguments.get("query", [])))[: self.max_queries]
        outcomes = await asyncio.gather(*(self.search_one(q) for q in queries))
        errors = tuple(err for _, err in outcomes if err)
        for query, (hits, _) in zip(queries, outcomes):
            state.searches.append((query, hits))
        if self.style == "search_r1":
            return Observation(self.name, render_search_r1([h for hits, _ in outcomes for h in hits]), errors)
        entries = [entry(q, hits, err) for q, (hits, err) in zip(queries, outcomes)]
        return Observation(self.name, repr(entries), errors)

    async def search_one(self, query: str, num: int | None = None) -> tuple[list[SearchResult], str | None]:
        """One query's top `num` (default top_k) hits, or its failure kind; the RAG baseline calls it directly."""
        num = num or self.top_k
        try:
            hits = (await self.backend.search(query, num))[:num]
        except SearchError as err:
            return [], f"search_{err.kind}"
        if self.snippet_chars is not None:
            hits = [dataclasses.replace(h, snippet=h.snippet[: self.snippet_chars]) for h in hits]
        return hits, None


def entry(query: str, hits: list[SearchResult], error: str | None) -> dict[str, Any]:
    """One query's block as the official server renders it (key 'quick_summary' holds the engine snippet)."""
    block: dict[str, Any] = {
        "search_query": query,
        "web_page_info_list": [{"title": h.title, "url": h.url, "quick_summary": h.snippet} for h in hits],
    }
    if error:
        block["error"] = error
    return block


def render_search_r1(hits: list[SearchResult]) -> str:
    """Search-R1's document list: 'Doc i(Title: t) text' per line."""
    return "\n".join(f"Doc {i}(Title: {h.title}) {h.snippet}" for i, h in enumerate(hits, 1)) or "No results."
