"""Upstream calls saved by our cache: no cache vs an exact-query cache like the paper's vs ours (normalised keys +
single-flight), on two real streams of tool calls, replayed against the sandbox with injected latency.

    .venv/bin/python bench/dedup.py [--training bench/data/g16_tool_calls.jsonl] [--latency-ms 100]

Streams:
- training: the tool calls of real GRPO steps (G=16 rollouts per question on the sandbox), taken from a run's
  trajectories.jsonl (bench/data/g16_tool_calls.jsonl, made by `--extract RUN/trajectories.jsonl`). The G rollouts
  of a step run concurrently turn by turn, as in training: turn t of every rollout is in flight at the same time.
- r1searcher: the search queries of two RL-trained policies (Qwen-2.5-7B and Llama-3.1-8B R1-Searcher) on the same
  HotpotQA and Bamboogle questions (../shared/data/workloads/r1searcher_rollouts/); both rollouts of a question run
  concurrently turn by turn, 32 questions at a time.

Upstream calls are counted where they leave the cache layer (each one is a real HTTP request to the sandbox).
Prints figures and ratios, writes bench/results/dedup.json. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from researchrl.sandbox.config import SandboxConfig, shared_data_dir
from researchrl.sandbox.faults import FaultConfig
from researchrl.sandbox.server import SandboxServer
from researchrl.search.serper import SerperSearch
from researchrl.web.cache import MemoryStore, SingleFlight
from researchrl.web.cached import Cached
from researchrl.web.http import FetchConfig, Fetcher
from researchrl.web.kinds import PAGE, SEARCH

Call = tuple[str, str]  # ("search", query) or ("page", path)
Rollout = list[list[Call]]  # turns, each with the upstream calls it makes
Group = list[Rollout]  # rollouts in flight together

HERE = Path(__file__).parent
R1_PAIRS = ("hotpotqa", "bamboogle")


def extract_training(trajectories: Path, out: Path) -> None:
    """Keep only what the bench needs from a run's trajectories.jsonl: per step, each rollout's calls by turn."""
    rows = []
    for line in trajectories.read_text().splitlines():
        record = json.loads(line)
        turns = []
        for turn in record["turns"]:
            call = turn.get("tool_call")
            if call is None:
                continue
            if call["name"] == "web_search":
                turns.append([["search", q] for q in call["arguments"]["query"][:3]])
            else:
                turns.append([["page", urlsplit(u).path] for u in call["arguments"]["url_list"][:5]])
        rows.append({"step": record["step"], "question_id": record["question_id"], "turns": turns})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} rollouts to {out}")


def training_stream(path: Path) -> list[Group]:
    """One group per training step: all of its rollouts (questions x G) run together."""
    by_step: dict[int, Group] = defaultdict(list)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        by_step[row["step"]].append([[tuple(c) for c in turn] for turn in row["turns"]])
    return [by_step[step] for step in sorted(by_step)]


def r1searcher_stream(batch: int = 32) -> list[Group]:
    """Both policies' rollouts of each question together, `batch` questions at a time."""
    folder = shared_data_dir() / "workloads" / "r1searcher_rollouts"
    query = re.compile(r"<\|begin_of_query\|>(.*?)<\|end_of_query\|>", re.DOTALL)
    questions: list[Group] = []
    for name in R1_PAIRS:
        qwen, llama = ({json.loads(line)["question"]: json.loads(line)["gen_text_store"]
                        for line in gzip.open(folder / f"{name}_{model}.jsonl.gz", "rt")} for model in ("qwen", "llama"))
        for question in sorted(qwen.keys() & llama.keys()):  # the files list the same questions in other orders
            questions.append([[[("search", q)] for q in query.findall(text)] for text in (qwen[question], llama[question])])
    return [sum(questions[i : i + batch], []) for i in range(0, len(questions), batch)]


class Counting:
    """Counts calls that reach the real upstream (search API or page server)."""

    def __init__(self, inner: Any):
        self.inner, self.calls = inner, 0
        self.name = getattr(inner, "name", "pages")

    async def search(self, query: str, num: int = 10) -> Any:
        self.calls += 1
        return await self.inner.search(query, num)

    async def fetch(self, url: str) -> Any:
        self.calls += 1
        return await self.inner.fetch(url)

    async def aclose(self) -> None:
        await self.inner.aclose()


class ExactCache:
    """The paper's tool-server cache: exact string keys, stored after the call returns, no sharing of calls in flight."""

    def __init__(self, upstream: Any):
        self.upstream, self.saved = upstream, {}
        self.name = getattr(upstream, "name", "pages")

    async def search(self, query: str, num: int = 10) -> Any:
        if query not in self.saved:
            self.saved[query] = await self.upstream.search(query, num)
        return self.saved[query]

    async def fetch(self, url: str) -> Any:
        if url not in self.saved:
            self.saved[url] = await self.upstream.fetch(url)
        return self.saved[url]


@dataclass
class Outcome:
    """Upstream calls (search, page) of one strategy on one stream."""

    search: int
    page: int
    seconds: float

    @property
    def total(self) -> int:
        return self.search + self.page


async def replay(groups: list[Group], strategy: str, server: SandboxServer) -> Outcome:
    """Run the stream through one strategy; each rollout's turns in order, the group's rollouts concurrently."""
    search = Counting(SerperSearch(api_key="sandbox", base_url=server.url))
    pages = Counting(Fetcher(FetchConfig(allow_hosts=frozenset({f"{server.host}:{server.port}"}), per_host_concurrency=256)))
    if strategy == "exact":
        front_search, front_pages = ExactCache(search), ExactCache(pages)
    elif strategy == "ours":
        store, flight = MemoryStore(), SingleFlight()
        front_search = Cached(SEARCH, search, store, "cache", flight=flight)
        front_pages = Cached(PAGE, pages, store, "cache", flight=flight)
    else:
        front_search, front_pages = search, pages

    async def call(kind: str, arg: str) -> None:
        try:
            if kind == "search":
                await front_search.search(arg, 10)
            else:
                await front_pages.fetch(server.url + arg)
        except Exception as err:  # noqa: BLE001 - a 404 page is still one upstream call, which is what we count
            if type(err).__name__ not in ("FetchError", "SearchError"):
                raise

    async def rollout(turns: Rollout) -> None:
        for turn in turns:
            await asyncio.gather(*(call(kind, arg) for kind, arg in turn))

    started = time.perf_counter()
    for group in groups:
        await asyncio.gather(*(rollout(r) for r in group))
    seconds = time.perf_counter() - started
    await search.aclose()
    await pages.aclose()
    return Outcome(search.calls, pages.calls, seconds)


async def run_stream(groups: list[Group], latency_ms: float) -> dict[str, Any]:
    """The three strategies on one stream, each against a fresh sandbox with the same latency distribution."""
    calls = sum(len(turn) for group in groups for r in group for turn in r)
    result: dict[str, Any] = {"groups": len(groups), "calls": calls}
    for strategy in ("none", "exact", "ours"):
        faults = FaultConfig(latency_ms=latency_ms, latency_p99_ms=latency_ms * 10)
        with SandboxServer(SandboxConfig(faults=faults)) as server:
            outcome = await replay(groups, strategy, server)
        result[strategy] = {"search": outcome.search, "page": outcome.page, "total": outcome.total,
                            "seconds": round(outcome.seconds, 2)}
        print(f"  {strategy:5s}: {outcome.total:5d} upstream calls ({outcome.search} search, {outcome.page} page) "
              f"in {outcome.seconds:.1f} s")
    result["ratio_vs_no_cache"] = round(result["ours"]["total"] / result["none"]["total"], 3)
    result["ratio_vs_exact_cache"] = round(result["ours"]["total"] / result["exact"]["total"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--training", type=Path, default=HERE / "data" / "g16_tool_calls.jsonl",
                        help="the training stream (made with --extract)")
    parser.add_argument("--extract", type=Path, help="make the training stream from this trajectories.jsonl and exit")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="median injected latency (p99 is 10x)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "dedup.json")
    args = parser.parse_args()
    if args.extract:
        extract_training(args.extract, args.training)
        return
    results: dict[str, Any] = {"latency_ms": args.latency_ms, "latency_p99_ms": args.latency_ms * 10}
    for name, groups in (("training", training_stream(args.training)), ("r1searcher", r1searcher_stream())):
        print(f"{name} stream:")
        results[name] = asyncio.run(run_stream(groups, args.latency_ms))
        print(f"  ours / no cache = {results[name]['ratio_vs_no_cache']}, ours / exact cache = "
              f"{results[name]['ratio_vs_exact_cache']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
