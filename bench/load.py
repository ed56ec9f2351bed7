"""Tool-call load: 4,096 concurrent calls (half web_search, half browse_webpage with the extractive reader) against
the sandbox with injected lognormal latency (median 300 ms, p99 3 s), executed on asyncio and on a local Ray pool.

    .venv/bin/python bench/load.py [--calls 4096] [--executors local,ray] [--ray-workers 2]

The ratio is wall time ÷ the slowest single call chain. Every call here is one upstream request (a search, or one
page fetch followed by local extraction and reading), so the slowest chain is the largest latency the sandbox
injected into any request of the run (recomputed from its seeded draws) — the wall time of a perfectly parallel
executor. The sandbox runs in its own process (`researchrl sandbox serve`), so its work is not charged to the
executor; the cache is off (`web=live`), so every call really goes upstream. CPU seconds of the driver and
of the sandbox show where the time went. Prints figures, writes bench/results/load_<executor>.json with
{"ratio": ...}. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil

from researchrl.data.load import load_questions
from researchrl.environment import EnvConfig, open_environment
from researchrl.policy.vllm_server import free_port
from researchrl.sandbox.config import shared_data_dir
from researchrl.sandbox.faults import FaultConfig
from researchrl.sandbox.server import spawn_sandbox
from researchrl.tools.base import EpisodeState
from researchrl.types import ToolCall
from researchrl.web.http import FetchConfig

HERE = Path(__file__).parent
MEDIAN_MS, P99_MS = 300.0, 3000.0


def workload(n: int, seed: int) -> list[ToolCall]:
    """n calls, alternating a search of a real question and a browse of a real Wikipedia page of the corpus."""
    rng = random.Random(seed)
    questions = [q.question for q in load_questions(shared_data_dir() / "wiki" / "questions.jsonl")]
    titles = []
    with (shared_data_dir() / "wiki" / "passages.jsonl").open() as f:
        for line in f:
            titles.append(json.loads(line)["title"])
    calls = []
    for i in range(n):
        if i % 2 == 0:
            calls.append(ToolCall("web_search", {"query": [rng.choice(questions)]}))
        else:
            calls.append(ToolCall("browse_webpage", {"url_list": [f"/wiki/{quote(rng.choice(titles).replace(' ', '_'))}"]}))
    return calls


async def run(calls: list[ToolCall], base: str, executor: str, workers: int) -> dict[str, Any]:
    """All calls at once through the real tools; wall time, per-call seconds and error kinds."""
    host = base.removeprefix("http://")
    env = EnvConfig(
        search="serper", search_url=base, web="live", executor=executor, ray_workers=workers,  # type: ignore[arg-type]
        fetch=FetchConfig(allow_hosts=frozenset({host}), per_host_concurrency=len(calls), max_connections=len(calls)),
    )
    async with open_environment(env) as tools:

        async def one(call: ToolCall) -> tuple[float, tuple[str, ...]]:
            if call.name == "browse_webpage":
                call = ToolCall(call.name, {"url_list": [base + call.arguments["url_list"][0]]})
            started = time.perf_counter()
            obs = await tools.call(call, EpisodeState("What is this page about?"))
            return time.perf_counter() - started, obs.errors

        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one(c) for c in calls))
        wall = time.perf_counter() - started
    errors: dict[str, int] = {}
    for _, kinds in outcomes:
        for kind in kinds:
            errors[kind] = errors.get(kind, 0) + 1
    seconds = sorted(s for s, _ in outcomes)
    return {"wall_s": round(wall, 2), "call_p50_s": round(seconds[len(seconds) // 2], 3),
            "call_max_s": round(seconds[-1], 3), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=4096, help="concurrent tool calls")
    parser.add_argument("--executors", default="local,ray", help="comma-separated: local (asyncio) and/or ray")
    parser.add_argument("--ray-workers", type=int, default=2, help="Ray tool workers (this machine has 2 cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=HERE / "results", help="load_<executor>[suffix].json go here")
    parser.add_argument("--suffix", default="", help="added to the result file names (e.g. _1024)")
    args = parser.parse_args()
    os.environ.setdefault("SERPER_API_KEY", "sandbox")  # the sandbox speaks Serper's API and ignores the key
    calls = workload(args.calls, args.seed)
    settings = {"calls": args.calls, "latency_median_ms": MEDIAN_MS, "latency_p99_ms": P99_MS, "ray_workers": args.ray_workers}
    for executor in args.executors.split(","):
        port = free_port()
        server = spawn_sandbox(port, args.seed, "--latency-ms", str(MEDIAN_MS), "--latency-p99-ms", str(P99_MS))
        try:
            base = f"http://127.0.0.1:{port}"
            cpu = time.process_time()
            figures = asyncio.run(run(calls, base, executor, args.ray_workers))
            figures["driver_cpu_s"] = round(time.process_time() - cpu, 1)
            figures["sandbox_cpu_s"] = round(sum(psutil.Process(server.pid).cpu_times()[:2]), 1)
            requests = httpx.get(f"{base}/_faults", timeout=5).json()["requests"]
        finally:
            server.terminate()
            server.wait(timeout=10)
        if not requests:
            raise SystemExit(f"{executor}: no request reached the sandbox: {figures}")
        draws = FaultConfig(seed=args.seed, latency_ms=MEDIAN_MS, latency_p99_ms=P99_MS)
        slowest = max(draws.draw(n)[1] for n in range(requests))
        figures.update(upstream_requests=requests, slowest_chain_s=round(slowest, 3),
                       ratio=round(figures["wall_s"] / slowest, 3))
        print(f"{executor:5s}: {args.calls} calls in {figures['wall_s']} s; slowest chain {slowest:.2f} s; "
              f"ratio {figures['ratio']}; p50 call {figures['call_p50_s']} s; CPU s: driver {figures['driver_cpu_s']}, "
              f"sandbox {figures['sandbox_cpu_s']}; errors {figures['errors']}")
        out = args.out_dir / f"load_{'asyncio' if executor == 'local' else executor}{args.suffix}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**settings, "executor": executor, **figures}, indent=2))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
