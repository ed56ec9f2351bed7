"""`researchrl serve tools`: the environment's web_search and browse_webpage as an MCP server (stdio or streamable HTTP).

Every call goes through the stack training uses (`environment.open_environment`): cache → failover → guard
(circuit breaker, rate limit, budget, ledger) → provider. The environment opens with the server (its lifespan) and
closes with it, sandbox included. Results come back as text for the model and as structured content that matches
each tool's output schema; every string that goes out is redacted.

Faults never reach the server: a call whose every query (or URL) failed is a tool error (isError) naming the kinds,
"browse_webpage failed: ssrf_refused for http://…"; a call where only some failed is a result, the failures named
in its text and in each entry's `error`. What the web has cost since the server started: the `web_usage` tool and
the `researchrl://usage` resource (the ledger's calls, cache hits, bytes and USD, as training logs them).
"""

# No `from __future__ import annotations`: the MCP SDK reads the tools' annotations when `build_server` registers
# them, and they name SDK types imported there, so that the CLI runs without the serve extra installed.

import ast
import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import unquote, urlsplit

import typer
from pydantic import BaseModel, Field

from researchrl import options
from researchrl.bounds import MAX_QUESTION_CHARS
from researchrl.environment import EnvConfig, open_environment
from researchrl.errors import ConfigError, MissingDependency, ResearchRLError
from researchrl.serve.bind import listen
from researchrl.tools.base import EpisodeState, Toolset
from researchrl.tools.browse import BrowseTool, url_list as distinct_urls
from researchrl.tools.web_search import WebSearchTool
from researchrl.types import ToolCall
from researchrl.web.redact import redact, scrub

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from mcp_types import CallToolResult

USAGE_URI = "researchrl://usage"
TRANSPORTS = ("stdio", "http")
INSTRUCTIONS = (
    "Web research tools: web_search finds pages (ranked title, url, snippet per query); browse_webpage reads pages "
    "and returns what is relevant to your question. Search first, then browse the most promising URLs with the "
    "question. web_usage tells what the web has cost so far."
)


class Hit(BaseModel):
    """One search result."""

    title: str
    url: str
    snippet: str = Field(description="The engine's summary of the page.")


class QueryResults(BaseModel):
    """One query's results, best first, or the fault that kept them."""

    query: str
    results: list[Hit]
    error: str | None = Field(None, description="Fault kind when the search failed (search_timeout, search_http_429, ...).")


class SearchOutput(BaseModel):
    """web_search's answer: one entry per distinct query, in the order asked."""

    searches: list[QueryResults]


class Excerpt(BaseModel):
    """What the reader kept from one segment of a page."""

    page_number: int = Field(description="0-based segment of the page's text the excerpt comes from.")
    text: str


class PageReading(BaseModel):
    """One URL's excerpts, or the fault that kept them."""

    url: str
    excerpts: list[Excerpt]
    error: str | None = Field(None, description="Fault kind when the page could not be read (http_404, ssrf_refused, captcha, ...).")


class BrowseOutput(BaseModel):
    """browse_webpage's answer: one entry per URL read, in the order asked."""

    pages: list[PageReading]


class WebUsage(BaseModel):
    """What the web has cost since the server started."""

    summary: str = Field(description="Upstream calls by kind, cache hits and USD, in one line.")
    metrics: dict[str, float] = Field(description="The ledger's totals as training logs them: web/calls/KIND/PROVIDER, web/hits/KIND/PROVIDER, web/bytes/KIND, web/cost_usd_run, ...")


class Running:
    """The environment's tools while the server runs: set by the lifespan, None outside it."""

    tools: Toolset | None = None

    def get(self) -> Toolset:
        """The open tools; a call outside the lifespan is a bug of the transport, not a user's."""
        if self.tools is None:
            raise RuntimeError("the environment is not open: the server's lifespan has not started")
        return self.tools


async def search(tools: Toolset, queries: list[str], top_k: int) -> SearchOutput:
    """Each distinct query (at most the tool's max_queries) through the environment's search stack, concurrently."""
    tool = tools.tools["web_search"]
    assert isinstance(tool, WebSearchTool)
    asked = list(dict.fromkeys(q.strip() for q in queries if q.strip()))[: tool.max_queries]
    outcomes = await asyncio.gather(*(tool.search_one(query, top_k) for query in asked))
    return SearchOutput(searches=[
        QueryResults(query=query, results=[Hit(title=h.title, url=h.url, snippet=h.snippet) for h in hits], error=error)
        for query, (hits, error) in zip(asked, outcomes)
    ])


async def browse(tools: Toolset, urls: list[str], question: str | None) -> BrowseOutput:
    """The distinct URLs (at most the tool's max_urls) read by the environment's browse tool, in a fresh episode
    about `question` (default: the words of the URLs' paths)."""
    tool = tools.tools["browse_webpage"]
    assert isinstance(tool, BrowseTool)
    urls = distinct_urls(urls, tool.max_urls)
    if not urls:
        return BrowseOutput(pages=[])
    state = EpisodeState(question or path_words(urls))
    observation = await tools.call(ToolCall("browse_webpage", {"url_list": urls}), state)
    entries = ast.literal_eval(observation.text)  # browse.py's documented shape: a Python repr of a list of dicts
    return BrowseOutput(pages=[
        PageReading(
            url=entry["url"],
            excerpts=[Excerpt(page_number=info["page_number"], text=info["page_summary"]) for info in entry["information"]],
            error=entry.get("error"),
        )
        for entry in entries
    ])


def path_words(urls: list[str]) -> str:
    """The words of the URLs' paths, a question's stand-in ("/wiki/Little_Caesars" -> "wiki Little Caesars")."""
    return " ".join(re.sub(r"[\W_]+", " ", unquote(urlsplit(url).path)).strip() for url in urls)


def usage(tools: Toolset) -> WebUsage:
    """The ledger's totals (the server never starts a training step, so step totals are the server's)."""
    from researchrl.display import web_summary

    metrics = tools.ledger.metrics()
    return WebUsage(summary=web_summary(metrics), metrics=metrics)


def render_search(out: SearchOutput) -> str:
    """Ranked results per query, as a model reads them."""
    blocks = []
    for entry in out.searches:
        if entry.error:
            blocks.append(f'Search "{entry.query}" failed: {entry.error}.')
            continue
        lines = [f'Results for "{entry.query}":'] if entry.results else [f'No results for "{entry.query}".']
        lines += [f"{n}. {h.title}\n   {h.url}\n   {h.snippet}" for n, h in enumerate(entry.results, 1)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def render_browse(out: BrowseOutput) -> str:
    """Each URL's excerpts, or why it could not be read, as a model reads them."""
    blocks = []
    for page in out.pages:
        if page.error:
            blocks.append(f"{page.url}: could not be read ({page.error}).")
        elif not page.excerpts:
            blocks.append(f"{page.url}: nothing relevant to the question.")
        else:
            blocks.append("\n".join([f"{page.url}:", *(f"[page {e.page_number}] {e.text}" for e in page.excerpts)]))
    return "\n\n".join(blocks)


def failure(tool: str, failed: list[tuple[str, str]], total: int) -> str | None:
    """The tool error when every one of `total` items failed ((item, kind) pairs); None when any succeeded."""
    if not failed or len(failed) < total:
        return None
    return f"{tool} failed: " + "; ".join(f"{kind} for {item}" for item, kind in failed)


def answer(text: str, out: BaseModel) -> "CallToolResult":
    """A result: text for the model, `out` as the structured content, both redacted."""
    from mcp_types import CallToolResult, TextContent

    return CallToolResult(content=[TextContent(type="text", text=redact(text))],
                          structured_content=scrub(out.model_dump(mode="json")))


def tool_error(text: str) -> "CallToolResult":
    """A tool error (isError): the call failed, the server did not."""
    from mcp_types import CallToolResult, TextContent

    return CallToolResult(content=[TextContent(type="text", text=redact(text))], is_error=True)


async def web_search_result(tools: Toolset, queries: list[str], top_k: int) -> "CallToolResult":
    """web_search's answer: the results, or a tool error when no query could be searched."""
    try:
        out = await search(tools, queries, top_k)
    except ResearchRLError as err:  # a replay miss, a store that cannot answer: the call fails, the server stays
        return tool_error(f"web_search failed: {getattr(err, 'kind', type(err).__name__)}: {err}")
    if not out.searches:
        return tool_error("web_search failed: bad_arguments: query must hold at least one non-blank query")
    failed = [(json.dumps(entry.query), entry.error) for entry in out.searches if entry.error]
    message = failure("web_search", failed, len(out.searches))
    return tool_error(message) if message else answer(render_search(out), out)


async def browse_result(tools: Toolset, urls: list[str], question: str | None) -> "CallToolResult":
    """browse_webpage's answer: what was read, or a tool error when no URL could be read."""
    try:
        out = await browse(tools, urls, question)
    except ResearchRLError as err:
        return tool_error(f"browse_webpage failed: {getattr(err, 'kind', type(err).__name__)}: {err}")
    if not out.pages:
        return tool_error("browse_webpage failed: bad_arguments: url_list must hold at least one non-blank URL")
    failed = [(page.url, page.error) for page in out.pages if page.error]
    message = failure("browse_webpage", failed, len(out.pages))
    return tool_error(message) if message else answer(render_browse(out), out)


def require_sdk() -> None:
    """Raise MissingDependency, with the pip command, when the MCP SDK is not installed."""
    try:
        import mcp.server.mcpserver  # noqa: F401 - only its presence is checked here
    except ImportError as err:
        raise MissingDependency("mcp (the MCP Python SDK)", "serve") from err


def build_server(env: EnvConfig) -> "MCPServer":
    """The MCP server of `env`'s web tools; the environment opens in its lifespan and closes when it stops."""
    require_sdk()
    from mcp.server.mcpserver import MCPServer
    from mcp_types import CallToolResult, ToolAnnotations

    running = Running()

    @contextlib.asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[None]:
        """The environment's tools for as long as the server runs."""
        async with open_environment(env) as tools:
            running.tools = tools
            try:
                yield
            finally:
                running.tools = None

    server = MCPServer("researchrl-tools", instructions=INSTRUCTIONS, lifespan=lifespan, log_level="WARNING")
    web = ToolAnnotations(read_only_hint=True, open_world_hint=True)
    Query = Annotated[str, Field(min_length=1, max_length=MAX_QUESTION_CHARS)]

    @server.tool(annotations=web)
    async def web_search(
        query: Annotated[list[Query] | Query, Field(description=f"The queries to search (or one query); at most the first {WebSearchTool.max_queries} distinct ones are run.")],
        top_k: Annotated[int | None, Field(ge=1, le=env.top_k, description=f"Results per query (default and most: {env.top_k}).")] = None,
    ) -> Annotated[CallToolResult, SearchOutput]:
        """Search the web: ranked results (title, url, snippet) for each query. Use it to find pages worth reading."""
        return await web_search_result(running.get(), [query] if isinstance(query, str) else query, top_k or env.top_k)

    @server.tool(annotations=web)
    async def browse_webpage(
        url_list: Annotated[list[str] | str, Field(description="URLs to read, usually from web_search results (or one URL); at most the first 5 distinct ones are read.")],
        question: Annotated[str | None, Field(max_length=MAX_QUESTION_CHARS, description="What you want to learn from the pages: the reader keeps what is relevant to it. Without it, the words of the URLs' paths steer the reader.")] = None,
    ) -> Annotated[CallToolResult, BrowseOutput]:
        """Read web pages and return what is relevant to the question, per URL (with the extractive reader: the page's own most relevant sentences)."""
        return await browse_result(running.get(), [url_list] if isinstance(url_list, str) else url_list, question)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False))
    def web_usage() -> WebUsage:
        """What the web has cost since the server started: upstream calls, cache hits, bytes and USD."""
        return usage(running.get())

    @server.resource(USAGE_URI, name="web_usage", mime_type="application/json",
                     description="What the web has cost since the server started: upstream calls, cache hits, bytes, USD.")
    def usage_resource() -> str:
        """The web_usage record as JSON."""
        return usage(running.get()).model_dump_json()

    return server


def serve_http(server: "MCPServer", sock: socket.socket, host: str, path: str) -> None:
    """Serve streamable HTTP on the bound `sock` at PATH until Ctrl-C or SIGTERM (then the environment closes)."""
    import uvicorn

    app = server.streamable_http_app(streamable_http_path=path, host=host)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2)
    shown = f"[{host}]" if ":" in host else host
    options.err_console.print(f"MCP tools at http://{shown}:{sock.getsockname()[1]}{path} (Ctrl-C stops)", soft_wrap=True)
    uvicorn.Server(config).run(sockets=[sock])


async def check_environment(env: EnvConfig) -> None:
    """Open the environment once and close it, so a mistake (no corpus, no key, no cache) is one line before serving."""
    async with open_environment(env):
        pass


def tools_command(
    ctx: typer.Context,
    transport: str = typer.Option("stdio", help="stdio (an MCP client spawns this command) | http (streamable HTTP at http://HOST:PORT/PATH)."),
    host: str = typer.Option("127.0.0.1", help="With --transport http: address to bind; keep loopback unless you mean to expose the tools."),
    port: int = typer.Option(8766, min=1, max=65535, help="With --transport http: port to listen on."),
    path: str = typer.Option("/mcp", help="With --transport http: the endpoint's path."),
    config: Path | None = options.CONFIG,
    set_: list[str] = options.SET,
    search: str = options.SEARCH,
    search_url: str | None = options.SEARCH_URL,
    corpus: Path | None = options.CORPUS,
    reader: str = options.READER,
    reader_url: str | None = options.READER_URL,
    reader_model: str = options.READER_MODEL,
    reader_max_tokens: int | None = options.READER_MAX_TOKENS,
    web: str = options.WEB,
    cache: str | None = options.CACHE,
) -> None:
    """Serve web_search and browse_webpage to MCP clients, over the same cached, guarded, budgeted web as training."""
    from researchrl.resolve import EPISODE_FLAGS, resolve_flags

    with options.exit_on_known():
        if transport not in TRANSPORTS:
            raise ConfigError(f"--transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        if not path.startswith("/"):
            raise ConfigError(f"--path must start with '/', not {path!r}")
        env = resolve_flags(ctx, EPISODE_FLAGS, None, "after", config, set_, None).env
        server = build_server(env)
        if transport == "stdio":
            asyncio.run(check_environment(env))
            server.run("stdio")  # stdout carries the protocol only: logs go to stderr
            return
        with contextlib.closing(listen(host, port)) as sock:  # a taken port is said before the environment starts
            asyncio.run(check_environment(env))
            serve_http(server, sock, host, path)
