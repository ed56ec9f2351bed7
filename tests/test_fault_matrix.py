"""Faults x (search, fetch, reader) through the real clients and tools: the right error kind, bounded requests, no crash.

Each cell starts a sandbox whose one fault kind hits one endpoint on every request (connect timeouts come
from a Blackhole instead), calls the real client once (SerperSearch, Fetcher, LLMReader), then the real
tool (WebSearchTool, BrowseTool). The mixed run sends many scripted episodes through a web where every
kind is injected and accounts for each injected fault in the trajectories.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from researchrl.agent.loop import AgentConfig, run_episode
from researchrl.policy.base import Context
from researchrl.policy.scripted import ScriptedPolicy, last_observation
from researchrl.policy.tokenizers import ByteChatTokenizer
from researchrl.sandbox.config import SandboxConfig, shared_data_dir
from researchrl.sandbox.faults import APPLIES_TO, FAULT_KINDS, RATE_FIELDS, FaultConfig
from researchrl.sandbox.reader_api import READER_MODEL
from researchrl.sandbox.server import Blackhole, SandboxServer
from researchrl.search.base import SearchError
from researchrl.search.serper import SerperSearch
from researchrl.tools.base import EpisodeState, Toolset
from researchrl.tools.browse import BrowseTool
from researchrl.tools.reader import ExtractiveReader, LLMReader, ReaderError, ReadRequest
from researchrl.tools.web_search import WebSearchTool
from researchrl.types import Observation, Question
from researchrl.web.errors import FetchError
from researchrl.web.http import FetchConfig, Fetcher
from researchrl.web.retry import RetryPolicy
from tests.loopback import LoopbackOnlyTransport

if not (shared_data_dir() / "wiki" / "passages.jsonl").exists():
    pytest.skip("needs ../shared/data (or $RESEARCHRL_SHARED_DATA)", allow_module_level=True)

TIMEOUT = 0.3  # every client timeout in the matrix
HANG = 0.45  # a timeout fault hangs just past it
RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, max_retry_after=0.05)
MAX_REDIRECTS = 3
QUESTION = "If Gallu is a demon Lilu is what?"
PAGE = "/wiki/Lilu_(mythology)"
ENDPOINT = {"search": "search", "fetch": "pages", "reader": "reader"}  # matrix column -> sandbox target
TOOL_PREFIX = {"search": "search_", "fetch": "", "reader": "reader_"}  # how each tool names a client's error kind


@dataclass(frozen=True)
class Cell:
    """One fault at one endpoint: what the client must raise, and whether that kind is retried."""

    column: str  # search | fetch | reader
    fault: str  # a FAULT_KINDS entry, or "connect_timeout" (the Blackhole)
    kind: str  # the error kind the client raises
    retried: bool
    options: dict[str, Any] = field(default_factory=dict)  # more FaultConfig fields

    @property
    def id(self) -> str:
        return "-".join([self.column, self.fault, *map(str, self.options.values())])

    def sandbox_faults(self) -> FaultConfig:
        """Rate 1.0 of this cell's fault, at its endpoint only."""
        rate = {} if self.fault == "connect_timeout" else {RATE_FIELDS[self.fault]: 1.0}
        return FaultConfig(hang_s=HANG, targets=(ENDPOINT[self.column],), **rate, **self.options)  # type: ignore[arg-type]

    def requests_per_call(self) -> int:
        """What one client call may send: every attempt when retried, one per hop through a redirect loop."""
        if self.fault == "redirect_loop":
            return MAX_REDIRECTS + 1
        return RETRY.attempts if self.retried else 1


CELLS = [
    Cell("search", "http_429", "http_429", True),
    Cell("search", "http_500", "http_500", True),
    Cell("search", "connect_timeout", "timeout", True),
    Cell("search", "timeout", "timeout", True),
    Cell("search", "truncated", "network", True),
    Cell("search", "garbage_json", "bad_response", True),  # a 200 that is not JSON: the next answer may be real
    Cell("search", "captcha", "bad_response", True),
    Cell("fetch", "http_429", "http_429", True),
    Cell("fetch", "http_500", "http_500", True),
    Cell("fetch", "connect_timeout", "timeout", True),
    Cell("fetch", "timeout", "timeout", True),
    Cell("fetch", "truncated", "incomplete_body", True),
    Cell("fetch", "captcha", "captcha", False),
    Cell("fetch", "redirect_loop", "too_many_redirects", False),
    Cell("fetch", "huge_page", "too_large", False, {"huge_page_length": "declared"}),
    Cell("fetch", "huge_page", "too_large", False, {"huge_page_length": "chunked"}),
    Cell("fetch", "binary", "unsupported_content_type", False),
    Cell("fetch", "bad_encoding", "bad_encoding", False),
    Cell("reader", "http_429", "http_429", True),
    Cell("reader", "http_500", "http_500", True),
    Cell("reader", "connect_timeout", "timeout", True),
    Cell("reader", "timeout", "timeout", True),
    Cell("reader", "garbage_json", "bad_response", False),
]


def test_the_matrix_covers_every_kind_at_every_endpoint_it_applies_to() -> None:
    covered = {(cell.fault, ENDPOINT[cell.column]) for cell in CELLS}
    assert covered == {(kind, target) for kind in FAULT_KINDS for target in APPLIES_TO[kind]} | {
        ("connect_timeout", target) for target in ENDPOINT.values()}


@dataclass
class Rig:
    """The endpoints of one cell: a sandbox (the pages the reader cells read), and where the faulty endpoint is."""

    sandbox: SandboxServer
    faulty_url: str  # the sandbox, or the Blackhole for connect timeouts
    transport: LoopbackOnlyTransport = field(default_factory=LoopbackOnlyTransport)  # counts client attempts

    def seen(self) -> int:
        """Requests the sandbox counted at the cell's endpoint."""
        return self.sandbox.faults["requests"]

    def search(self) -> SerperSearch:
        return SerperSearch(api_key="sandbox-key", base_url=self.faulty_url, timeout=TIMEOUT, retry=RETRY,
                            client=httpx.AsyncClient(transport=self.transport))

    def fetcher(self, base_url: str, transport: httpx.AsyncBaseTransport | None = None) -> Fetcher:
        host = httpx.URL(base_url)
        config = FetchConfig(connect_timeout=TIMEOUT, read_timeout=TIMEOUT, deadline=10.0, retry=RETRY,
                             max_redirects=MAX_REDIRECTS, allow_hosts=frozenset({f"{host.host}:{host.port}"}))
        return Fetcher(config, client=httpx.AsyncClient(transport=transport or self.transport))

    async def reader(self) -> LLMReader:
        """The real LLMReader; it takes no HTTP client, so it is handed one that counts its attempts."""
        reader = LLMReader(base_url=f"{self.faulty_url}/v1", model=READER_MODEL, timeout=TIMEOUT, retry=RETRY)
        await reader._client.close()
        reader._client = openai.AsyncOpenAI(base_url=f"{self.faulty_url}/v1", api_key="unused", timeout=TIMEOUT,
                                            max_retries=0, http_client=httpx.AsyncClient(transport=self.transport))
        return reader


@contextlib.contextmanager
def rig(cell: Cell) -> Iterator[Rig]:
    """A sandbox with the cell's fault, plus a Blackhole in front of it for connect-timeout cells."""
    with SandboxServer(SandboxConfig(faults=cell.sandbox_faults())) as sandbox, contextlib.ExitStack() as stack:
        url = stack.enter_context(Blackhole()).url if cell.fault == "connect_timeout" else sandbox.url
        yield Rig(sandbox, url)


REQUEST = ReadRequest(QUESTION, "Lilu mythology", "", "A lilu or lilû is a masculine Akkadian word for a spirit, "
                      "related to Alû, demon.", 1, 1)


async def call_client(cell: Cell, r: Rig) -> str:
    """One call of the real client against the faulty endpoint; the error kind it raised."""
    if cell.column == "search":
        backend = r.search()
        try:
            with pytest.raises(SearchError) as raised:
                await backend.search(QUESTION)
        finally:
            await backend.aclose()
        return raised.value.kind
    if cell.column == "fetch":
        fetcher = r.fetcher(r.faulty_url)
        try:
            with pytest.raises(FetchError) as raised_fetch:
                await fetcher.fetch(r.faulty_url + PAGE)
        finally:
            await fetcher.aclose()
        return raised_fetch.value.kind
    reader = await r.reader()
    try:
        with pytest.raises(ReaderError) as raised_read:
            await reader.read(REQUEST)
    finally:
        await reader.aclose()
    return raised_read.value.kind


async def call_tool(cell: Cell, r: Rig) -> Observation:
    """The real tool over the same endpoint; pages for the reader column come from the fault-free page server."""
    state = EpisodeState(QUESTION)
    if cell.column == "search":
        backend = r.search()
        try:
            return await WebSearchTool(backend)({"query": [QUESTION]}, state)
        finally:
            await backend.aclose()
    pages_url = r.faulty_url if cell.column == "fetch" else r.sandbox.url
    fetcher = r.fetcher(pages_url, transport=r.transport if cell.column == "fetch" else LoopbackOnlyTransport())
    reader = await r.reader() if cell.column == "reader" else ExtractiveReader()
    try:
        return await BrowseTool(fetcher, reader)({"url_list": [pages_url + PAGE]}, state)
    finally:
        await fetcher.aclose()
        if isinstance(reader, LLMReader):
            await reader.aclose()


@pytest.mark.parametrize("cell", [pytest.param(c, id=c.id) for c in CELLS])
async def test_fault_cell(cell: Cell) -> None:
    with rig(cell) as r:
        tracemalloc.start()
        try:
            kind = await call_client(cell, r)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert kind == cell.kind
        attempts, seen = len(r.transport.hosts), r.seen()
        assert attempts == cell.requests_per_call() <= RETRY.attempts * (MAX_REDIRECTS + 1)
        assert seen == (0 if cell.fault == "connect_timeout" else attempts)  # the sandbox saw every one of them
        assert peak < 20_000_000, f"{peak} bytes held at once: a 50 MB page must be refused while streaming"

        observation = await call_tool(cell, r)
        name = TOOL_PREFIX[cell.column] + cell.kind
        assert observation.errors == (name,)
        assert ast.literal_eval(observation.text)[0]["error"] == name
        assert len(r.transport.hosts) - attempts == cell.requests_per_call()
        assert r.seen() - seen == (0 if cell.fault == "connect_timeout" else cell.requests_per_call())


# ---------------------------------------------------------------- many episodes, every kind at once

EPISODES = 100
CONCURRENCY = 20
MIX_TIMEOUT = 3.0  # far longer than the matrix's: 20 episodes at once share two CPU cores with three servers (1 s saw 2 stray page timeouts on a busy CI machine)
NO_RETRY = RetryPolicy(attempts=1)  # one request per call, so each injected fault is exactly one error
RATES = {  # per endpoint: high enough that every kind is drawn, low enough that later endpoints get traffic
    "search": 0.06,
    "pages": 0.07,
    "reader": 0.15,
}
ERRORS = {  # (endpoint, injected kind) -> the error the tools report, taken from the matrix
    (ENDPOINT[c.column], c.fault): TOOL_PREFIX[c.column] + c.kind for c in CELLS if c.fault != "connect_timeout"
}


def mixed_faults(target: str, seed: int) -> FaultConfig:
    """Every kind that applies to `target` at the same rate, nothing elsewhere."""
    rates = {RATE_FIELDS[k]: RATES[target] for k in FAULT_KINDS if target in APPLIES_TO[k]}
    # a hang outlasts the client's timeout by far: a busy event loop that reads a late reply still sees a timeout
    return FaultConfig(seed=seed, hang_s=MIX_TIMEOUT * 3, targets=(target,), **rates)  # type: ignore[arg-type]


def expert(pages_url: str):  # noqa: ANN201
    """Search, browse the first hit on the page host, answer; answer at once when the search failed."""

    def script(context: Context) -> str:
        turns = sum(m.role == "assistant" for m in context.messages)
        if turns == 0:
            call = {"name": "web_search", "arguments": {"query": [QUESTION]}}
            return f"search</think>\n<tool_call>\n{json.dumps(call)}\n</tool_call>"
        body = last_observation(context).removeprefix("<tool_response>\n").removesuffix("\n</tool_response>")
        if turns == 1:
            hits = [h for block in ast.literal_eval(body) for h in block["web_page_info_list"]]
            if hits:
                url = pages_url + httpx.URL(hits[0]["url"]).raw_path.decode()
                call = {"name": "browse_webpage", "arguments": {"url_list": [url]}}
                return f"browse</think>\n<tool_call>\n{json.dumps(call)}\n</tool_call>"
        return "done</think>\n<answer>a spirit</answer>"

    return script


@contextlib.asynccontextmanager
async def mixed_web(reader_faults: FaultConfig) -> AsyncIterator[tuple[Toolset, dict[str, SandboxServer]]]:
    """Search, pages and reader on three sandboxes (as on the real web, three hosts), each faulty its own way."""
    configs = {"search": mixed_faults("search", 1), "pages": mixed_faults("pages", 2), "reader": reader_faults}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(SandboxServer(SandboxConfig(faults=c))) for name, c in configs.items()}
        pages = httpx.URL(servers["pages"].url)
        backend = SerperSearch(api_key="sandbox-key", base_url=servers["search"].url, timeout=MIX_TIMEOUT,
                               retry=NO_RETRY)
        fetcher = Fetcher(FetchConfig(connect_timeout=MIX_TIMEOUT, read_timeout=MIX_TIMEOUT, deadline=10.0,
                                      retry=NO_RETRY, max_redirects=MAX_REDIRECTS, per_host_concurrency=CONCURRENCY,
                                      allow_hosts=frozenset({f"{pages.host}:{pages.port}"})))
        reader = LLMReader(base_url=f"{servers['reader'].url}/v1", model=READER_MODEL, timeout=MIX_TIMEOUT,
                           retry=NO_RETRY)
        try:
            yield Toolset([WebSearchTool(backend), BrowseTool(fetcher, reader)]), servers
        finally:
            await backend.aclose()
            await fetcher.aclose()
            await reader.aclose()


async def test_many_episodes_under_every_fault_kind_all_finish() -> None:
    async with mixed_web(mixed_faults("reader", 3)) as (tools, servers):
        gate = asyncio.Semaphore(CONCURRENCY)

        async def episode(i: int):  # noqa: ANN202
            async with gate:
                policy = ScriptedPolicy(expert(servers["pages"].url), ByteChatTokenizer())
                return await run_episode(Question(f"q{i}", QUESTION, ("a spirit",)), policy, tools, AgentConfig())

        outcomes = await asyncio.wait_for(asyncio.gather(*map(episode, range(EPISODES)), return_exceptions=True), 90)
        injected = {name: server.faults for name, server in servers.items()}
    crashed = [o for o in outcomes if isinstance(o, BaseException)]
    if crashed:
        raise crashed[0]
    trajectories = [o for o in outcomes if not isinstance(o, BaseException)]
    assert [t.termination for t in trajectories] == ["answer"] * EPISODES  # every episode finished
    # every injected fault is one error in some trajectory, under the name the matrix gives it; no other errors
    expected: Counter[str] = Counter()
    for target, counts in injected.items():
        for kind, n in counts.items():
            if kind != "requests" and n:
                expected[ERRORS[(target, kind)]] += n
    assert Counter(e for t in trajectories for e in t.tool_errors) == expected
    # the mix really held every kind at every endpoint it applies to
    for target, counts in injected.items():
        configured = {k for k, rate in servers[target].config.faults.rates.items() if rate > 0}
        assert {k for k, n in counts.items() if k != "requests" and n} == configured, (target, counts)
    assert injected["search"]["requests"] == EPISODES
