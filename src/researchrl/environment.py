"""Build the tools of one environment (sandbox, local corpus, or real web) behind the same two tools."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from researchrl.agent.loop import AgentConfig, run_episode
from researchrl.agent.protocols import get_protocol
from researchrl.config import RUNTIME
from researchrl.errors import ConfigError
from researchrl.policy.base import Policy
from researchrl.tools.base import Toolset
from researchrl.tools.browse import BrowseTool
from researchrl.tools.web_search import WebSearchTool
from researchrl.types import Question, Trajectory
from researchrl.web.http import FetchConfig
from researchrl.web.retry import RetryPolicy

if TYPE_CHECKING:
    from researchrl.tools.extract_pool import ExtractPool  # for annotations; _extract_pool imports it when used

T = TypeVar("T")
SearchName = Literal["sandbox", "local", "serper", "brave", "searxng", "tavily"]
SEARCH_NAMES: tuple[str, ...] = ("sandbox", "local", "serper", "brave", "searxng", "tavily")
WEB_MODES: tuple[str, ...] = ("live", "cache", "record", "replay")
DEFAULT_CACHE = Path.home() / ".cache" / "researchrl" / "web.sqlite"
SANDBOX_READER_ID = "http://sandbox"  # the sandbox reader's endpoint in cache keys: its port changes every run
SEARCH_URLS = {  # each hosted provider's public API, unless --search-url names another
    "serper": "https://google.serper.dev", "brave": "https://api.search.brave.com", "tavily": "https://api.tavily.com",
}
SANDBOX_NOTE = ("meta", "sandbox_url")  # where a recording notes its sandbox's address, so a replay keys searches alike


@dataclass(frozen=True)
class EnvConfig:
    """Which search engine, pages and reader the tools use; the default needs no network and no key."""

    search: SearchName = "sandbox"  # sandbox: BM25 over the shared Wikipedia passages, served on loopback
    search_url: str | None = None  # base URL override for the chosen provider (e.g. a SearXNG instance)
    corpus: Path | None = None  # JSONL/parquet corpus for search="local"
    reader: Literal["extractive", "llm"] = "extractive"  # extractive needs no LLM
    reader_url: str | None = None  # OpenAI-compatible base URL for reader="llm"
    reader_model: str = "qwen-plus"  # the paper's reader model
    reader_key_env: str = "READER_API_KEY"  # env var holding the reader's API key
    reader_max_tokens: int | None = None  # tokens per reader reply (None: no limit, as the paper's reader)
    top_k: int = 10  # results per query (paper: 10)
    snippet_chars: int | None = None  # cut search snippets to this length (None: as the engine returns them)
    search_timeout: float = 15.0  # seconds per search request
    search_retry: RetryPolicy = field(default_factory=RetryPolicy)  # bounded retries with backoff + jitter
    segment_chars: int = 40960  # browsing page size (paper: 1024*5*8)
    max_segments_per_url: int = 5  # a browse call reads at most this many segments of one page
    sandbox_faults: float = 0.0  # total injected fault rate on the in-process sandbox
    sandbox_seed: int = 0  # seed of the sandbox's fault sequence
    fetch: FetchConfig = field(default_factory=FetchConfig)
    # --- the web at scale: cache, record/replay, limits, budgets, executor ---
    web: Literal["live", "cache", "record", "replay"] = "cache"  # record: keep every response; replay: only from the file
    cache: str | None = None  # SQLite path | redis://host:port/db | memory; default: memory offline, DEFAULT_CACHE online
    failover: tuple[str, ...] = ()  # providers tried in order after `search` fails (e.g. ("brave", "searxng"))
    search_qps: float | None = None  # requests/s per search provider, shared by every process using the same cache
    breaker_failures: int = 5  # consecutive environment failures that open a provider's (or a host's) circuit
    breaker_cooldown: float = 30.0  # seconds an open circuit refuses calls before one trial call
    prices: tuple[tuple[str, float], ...] = ()  # USD per call overrides: (("serper", 0.001), ("reader:qwen-plus", 0.002))
    step_budget_usd: float | None = None  # spend cap per training step: past it, tools answer with a budget observation
    run_budget_usd: float | None = None  # spend cap per run: the run checkpoints and stops when it is reached
    ledger_path: Path | None = field(default=None, metadata=RUNTIME)  # a saved ledger (a run's ledger.json) whose totals this environment continues
    executor: Literal["local", "ray"] = "local"  # ray: search, fetch and read calls run on a pool of Ray actors
    ray_address: str | None = None  # a Ray cluster address; None starts a local Ray
    ray_workers: int = 2  # tool worker actors in the pool
    extract_workers: int | None = None  # page-extraction processes here; None: one per usable core; 0: a thread

    def __post_init__(self) -> None:
        choices = {"search": SEARCH_NAMES, "web": WEB_MODES, "reader": ("extractive", "llm"), "executor": ("local", "ray")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        provider_names(self)

    @property
    def sandbox_reader(self) -> bool:
        """reader = llm with no endpoint on the offline sandbox: the sandbox's own OpenAI-compatible reader answers."""
        return self.reader == "llm" and self.reader_url is None and self.search == "sandbox"

    @property
    def reader_name(self) -> str:
        """The reader model as the ledger, prices and cache keys name it."""
        return "sandbox-reader" if self.sandbox_reader else self.reader_model


def _backend(cfg: EnvConfig, name: str, sandbox_url: str | None):  # noqa: ANN202
    """The search backend named `name`; keys are read from the environment by each client."""
    limits = {"timeout": cfg.search_timeout, "retry": cfg.search_retry}
    url = search_url(cfg, name, sandbox_url)
    if name in ("sandbox", "serper"):
        from researchrl.search.serper import SerperSearch

        if name == "sandbox":
            return SerperSearch(api_key="sandbox", base_url=url, **limits)
        return SerperSearch(base_url=url, **limits)
    if name == "brave":
        from researchrl.search.brave import BraveSearch

        return BraveSearch(base_url=url, **limits)
    if name == "tavily":
        from researchrl.search.tavily import TavilySearch

        return TavilySearch(base_url=url, **limits)
    if name == "searxng":
        from researchrl.search.searxng import SearxngSearch

        return SearxngSearch(base_url=url, **limits)
    raise ConfigError(f"unknown search backend {name!r}: choose one of {', '.join(SEARCH_NAMES)}")


def search_url(cfg: EnvConfig, name: str, sandbox_url: str | None) -> str:
    """A provider's endpoint: the sandbox's; --search-url for the first provider; else its public API ($SEARXNG_URL)."""
    if name == "sandbox":
        if sandbox_url is None:
            raise ValueError("the sandbox's address is known once it runs (or from a recording)")
        return sandbox_url
    url = cfg.search_url if name == cfg.search else None  # --search-url belongs to the first provider
    if name == "searxng":
        from researchrl.search.http_api import env_or

        return env_or(url, "SEARXNG_URL", name)  # SearXNG has no public API: MissingCredentials without one
    return url or SEARCH_URLS[name]


def search_cache_id(cfg: EnvConfig, sandbox_url: str | None) -> str:
    """What keys cached searches: each provider of the chain at its endpoint (a sandbox's port included), or the corpus."""
    from researchrl.web.cache import endpoint_id

    if cfg.search == "local":
        return f"local:{cfg.corpus.resolve() if cfg.corpus else ''}"
    ids = [f"{name}@{endpoint_id(search_url(cfg, name, sandbox_url))}" for name in provider_names(cfg)]
    return ids[0] if len(ids) == 1 else f"failover({'>'.join(ids)})"


def _reader(cfg: EnvConfig, sandbox_url: str | None = None):  # noqa: ANN202
    """The extractive reader, or the paper's LLM reader on an OpenAI-compatible endpoint (offline: the sandbox's)."""
    from researchrl.tools.reader import ExtractiveReader, LLMReader

    if cfg.reader == "extractive":
        return ExtractiveReader()
    url = f"{sandbox_url or SANDBOX_READER_ID}/v1" if cfg.sandbox_reader else cfg.reader_url
    if not url:
        raise ConfigError("reader llm needs a reader URL (--reader-url, or env.reader_url): an OpenAI-compatible base URL")
    return LLMReader(base_url=url, model=cfg.reader_name, api_key_env=cfg.reader_key_env, max_tokens=cfg.reader_max_tokens)


def provider_names(cfg: EnvConfig) -> list[str]:
    """Search providers in failover order, as cache keys and the ledger name them (sandbox results are keyed apart)."""
    names = [cfg.search, *cfg.failover]
    for name in names:
        if name not in SEARCH_NAMES or (name == "local" and len(names) > 1) or (name == "sandbox" and name != names[0]):
            raise ConfigError(f"bad search chain {' > '.join(names)}: providers are {', '.join(SEARCH_NAMES[2:])}")
    return names


def store_spec(cfg: EnvConfig) -> str:
    """Where responses are cached: the configured store; else memory offline and the user cache file online."""
    if cfg.cache:
        return cfg.cache
    if cfg.web in ("record", "replay"):
        what = "the file to record into" if cfg.web == "record" else "the recording to replay"
        raise ConfigError(f"web mode {cfg.web} needs a cache file (--cache FILE, or env.cache): {what}")
    return "memory" if cfg.search in ("sandbox", "local") else str(DEFAULT_CACHE)


@dataclass(frozen=True)
class Upstreams:
    """Builds the raw search providers, page source and reader; picklable, so a Ray worker can build its own."""

    cfg: EnvConfig
    sandbox_url: str | None
    fetch: FetchConfig

    def __call__(self) -> tuple[dict[str, Any], Any, Any]:
        """(providers by name, pages, reader), each with its own connections."""
        from researchrl.web.http import Fetcher

        if self.cfg.search == "local":
            from researchrl.search.local import LocalSearch

            if self.cfg.corpus is None:
                raise ConfigError("search local needs a corpus (--corpus PATH, or env.corpus): a JSONL or parquet file of {id, title, text}")
            local = LocalSearch.from_path(self.cfg.corpus)
            return {"local": local}, local, _reader(self.cfg, self.sandbox_url)
        providers = {name: _backend(self.cfg, name, self.sandbox_url) for name in provider_names(self.cfg)}
        return providers, Fetcher(self.fetch), _reader(self.cfg, self.sandbox_url)


async def _close(*things: Any) -> None:
    """Close every upstream that has connections."""
    for thing in things:
        close = getattr(thing, "aclose", None)
        if close is not None:
            await close()


@contextlib.asynccontextmanager
async def open_environment(cfg: EnvConfig, protocol: str = "deepresearcher") -> AsyncIterator[Toolset]:
    """Start what the environment needs, yield its tools, stop everything.

    Layers, outermost first: cache (single-flight, record/replay) → failover → per-provider guard (circuit breaker,
    rate limit, budget, ledger) → the provider itself, local or on a Ray worker. Replay builds no upstream at all.
    """
    from researchrl.search.failover import FailoverSearch
    from researchrl.web.cache import SingleFlight, open_reachable
    from researchrl.web.cached import Cached
    from researchrl.web.guard import Guarded
    from researchrl.web.kinds import PAGE, READ, SEARCH
    from researchrl.web.ledger import Ledger, Prices
    from researchrl.web.limits import Breakers, CircuitBreaker, RateLimit
    from researchrl.web.store_guard import GuardedStore

    names = provider_names(cfg)
    async with contextlib.AsyncExitStack() as stack:
        store = await open_reachable(store_spec(cfg))
        stack.push_async_callback(store.aclose)
        prices = Prices(dict(cfg.prices))
        if cfg.ledger_path is not None and cfg.ledger_path.exists():  # a resumed run keeps counting its spend
            ledger = Ledger.from_json(cfg.ledger_path.read_text(), prices, cfg.step_budget_usd, cfg.run_budget_usd)
        else:
            ledger = Ledger(prices, cfg.step_budget_usd, cfg.run_budget_usd)
        if cfg.web in ("live", "cache"):  # a store failing mid-run costs hits, not episodes; a recording's must not
            store = GuardedStore(store, ledger)
        breaker = {"failures": cfg.breaker_failures, "cooldown": cfg.breaker_cooldown}
        reader_provider = f"reader:{cfg.reader_name}"  # what the guard, the ledger and the cache count reads under
        search = pages = reader = extract = sandbox_url = None
        if cfg.web != "replay":
            providers, pages, reader, extract, sandbox_url = await _upstreams(cfg, stack)
            guarded = [
                Guarded(
                    SEARCH,
                    providers[name],
                    rate=RateLimit(store, f"search:{name}", cfg.search_qps) if cfg.search_qps else None,
                    breaker=CircuitBreaker(**breaker),
                    ledger=ledger,
                    provider=name,  # the sandbox speaks Serper's API but costs nothing
                )
                for name in names
            ]
            search = guarded[0] if len(guarded) == 1 else FailoverSearch(guarded)
            pages = Guarded(PAGE, pages, breaker=Breakers(**breaker), ledger=ledger)
            if cfg.reader == "llm":
                reader = Guarded(
                    READ, reader, breaker=CircuitBreaker(**breaker), ledger=ledger, provider=reader_provider
                )
        elif cfg.reader == "extractive":
            reader = _reader(cfg)
        pool = _extract_pool(cfg, stack) if extract is None else None  # the local executor, or a replay
        if pool is not None:
            extract = pool.extract
        # with the extractive reader, a pool's worker also ranks the sentences it reads (tools/extract_pool.py)
        extract_and_rank = pool.extract_and_rank if pool is not None and cfg.reader == "extractive" else None
        if cfg.web != "live":
            flight = SingleFlight()
            chain = names[0] if len(names) == 1 else f"failover({'>'.join(names)})"
            search_id = search_cache_id(cfg, await _noted_sandbox(cfg, store, sandbox_url))
            search = Cached(SEARCH, search, store, cfg.web, flight=flight, counter=ledger, provider=chain,
                            cache_id=search_id)
            pages = Cached(PAGE, pages, store, cfg.web, flight=flight, counter=ledger)
            llm = cfg.reader == "llm"  # the extractive reader is not cached: it is cheaper than a lookup
            reader = Cached(READ, reader, store, cfg.web, flight=flight, counter=ledger,
                            provider=reader_provider if llm else None,
                            cache_id=await _reader_cache_id(cfg) if llm else None)
        stack.push_async_callback(_close, search, pages, reader)
        style = "search_r1" if protocol == "search_r1" else "deepresearcher"
        tools = [WebSearchTool(search, top_k=cfg.top_k, style=style, snippet_chars=cfg.snippet_chars)]
        if "browse_webpage" in get_protocol(protocol).tool_names:
            tools.append(
                BrowseTool(pages, reader, segment_chars=cfg.segment_chars, max_segments_per_url=cfg.max_segments_per_url,
                           extract=extract, extract_and_rank=extract_and_rank)
            )
        yield Toolset(tools, ledger=ledger)


async def _reader_cache_id(cfg: EnvConfig) -> str:
    """What keys the LLM reader's cached answers: model, endpoint (the sandbox's under a fixed name), prompt."""
    reader = _reader(cfg)
    await reader.aclose()
    return reader.cache_id


async def _noted_sandbox(cfg: EnvConfig, store: Any, running: str | None) -> str | None:  # noqa: ANN401
    """The sandbox address searches are keyed by: this run's (noted when recording), or the one a recording noted."""
    from researchrl.web.cached import ReplayMiss

    if cfg.search != "sandbox":
        return None
    if cfg.web == "replay":
        noted = await store.get(*SANDBOX_NOTE)
        if noted is None:
            raise ReplayMiss("the sandbox's address (the recording holds no sandbox run)")
        return noted.decode()
    if cfg.web == "record" and running is not None:
        await store.put(*SANDBOX_NOTE, running.encode(), None)
    return running


async def _upstreams(
    cfg: EnvConfig, stack: contextlib.AsyncExitStack
) -> tuple[dict[str, Any], Any, Any, Any, str | None]:
    """The raw providers, pages, reader, page extractor (None: in this process) and the sandbox's address (None: no
    sandbox), local or on Ray tool workers."""
    fetch_cfg, sandbox_url = cfg.fetch, None
    if cfg.search == "sandbox":
        server = start_sandbox(cfg)
        stack.callback(server.stop)
        sandbox_url = server.url
        # our own loopback server: allowlisted past the SSRF guard, and no per-site politeness limit needed
        fetch_cfg = replace(
            fetch_cfg,
            allow_hosts=fetch_cfg.allow_hosts | {f"{server.host}:{server.port}"},
            per_host_concurrency=max(fetch_cfg.per_host_concurrency, 256),
        )
    factory = Upstreams(cfg, sandbox_url, fetch_cfg)
    if cfg.executor == "local":
        return (*factory(), None, sandbox_url)
    from researchrl.distributed.tools import RayToolPool
    from researchrl.web.kinds import EXTRACT, PAGE, READ, SEARCH

    pool = RayToolPool(factory, workers=cfg.ray_workers, address=cfg.ray_address)
    await pool.start()
    stack.push_async_callback(pool.aclose)
    names = provider_names(cfg)
    providers = {name: pool.tool(SEARCH, name=name) for name in names}
    return providers, pool.tool(PAGE), pool.tool(READ), pool.tool(EXTRACT).call, sandbox_url


def _extract_pool(cfg: EnvConfig, stack: contextlib.AsyncExitStack) -> ExtractPool | None:
    """Page extraction on a process pool over the free cores, closed with the environment; None: in a thread."""
    from researchrl.tools.extract_pool import ExtractPool, pool_workers

    workers = pool_workers(cfg.extract_workers)
    if workers == 0:  # asked for, or one usable core: a pool would only take it from the event loop
        return None
    pool = ExtractPool(workers)
    stack.push_async_callback(pool.aclose)
    return pool


def start_sandbox(cfg: EnvConfig):  # noqa: ANN201
    """The in-process sandbox web on a free loopback port, with the configured fault rate."""
    from researchrl.sandbox.config import SandboxConfig
    from researchrl.sandbox.faults import FaultConfig
    from researchrl.sandbox.server import SandboxServer

    rate = cfg.sandbox_faults / 5
    faults = FaultConfig(
        seed=cfg.sandbox_seed, rate_429=rate, rate_500=rate, rate_timeout=rate, rate_truncated=rate, rate_captcha=rate,
        hang_s=max(cfg.fetch.read_timeout, cfg.search_timeout) + 1.0,
    )
    return SandboxServer(SandboxConfig(faults=faults)).start()


class BackgroundLoop:
    """One asyncio loop in a daemon thread: sync code (the trainer) submits coroutines and waits for them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="researchrl-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and block until it finishes."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        """Stop the loop and join its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class RunningEnvironment:
    """An open environment for sync callers (a trainer): tools living on a background loop across many batches."""

    def __init__(self, env: EnvConfig, protocol: str):
        self.loop = BackgroundLoop()
        self._context = open_environment(env, protocol)
        try:
            self.tools: Toolset = self.loop.run(self._context.__aenter__())
        except BaseException:  # a cache or an endpoint that cannot open: no loop thread left behind
            self.loop.close()
            raise

    def episodes(
        self, questions: list[Question], policy: Policy, cfg: AgentConfig, sample_indices: list[int],
        tools: Toolset | None = None,
    ) -> list[Trajectory]:
        """Run all episodes concurrently and return them in input order (through `tools`, a wrapper of ours, if given)."""
        toolset = tools or self.tools

        async def gather() -> list[Trajectory]:
            return await asyncio.gather(
                *(run_episode(q, policy, toolset, cfg, sample_index=i) for q, i in zip(questions, sample_indices))
            )

        return self.loop.run(gather())

    def close(self) -> None:
        """Stop the sandbox and clients, then the loop; a close that fails is logged with its error, not raised."""
        try:
            self.loop.run(self._context.__aexit__(None, None, None))
        except Exception:  # noqa: BLE001 - logged with its traceback, not hidden; teardown must not mask the run's result
            logging.getLogger("researchrl").exception("could not close the environment's tools (sandbox, clients, caches)")
        finally:
            self.loop.close()
