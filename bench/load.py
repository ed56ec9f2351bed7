"""Tool-call load: 4,096 concurrent calls (half web_search, half browse_webpage with the extractive reader) against
the sandbox with injected lognormal latency (median 300 ms, p99 3 s), executed on asyncio and on a local Ray pool.

The four result files (run them on a quiet machine; each command writes two):

    .venv/bin/python bench/load.py                              # bench/results/load_asyncio.json, load_ray.json
    .venv/bin/python bench/load.py --calls 1024 --suffix _1024   # bench/results/load_asyncio_1024.json, load_ray_1024.json

Two floors, and the wall time against each. No executor can beat either:

- latency floor (`slowest_chain_s`): every call here is one upstream request (a search, or one page fetch followed
  by local extraction and reading), so the slowest chain is the largest latency the sandbox injected into any
  request of the run (recomputed from its seeded draws): the wall time of a perfectly parallel executor.
  `ratio` = wall ÷ this floor.
- CPU floor (`cpu_floor_s`): the CPU seconds (user + system) the run's processes spent while the calls were in
  flight, ÷ the cores this process may use (`os.sched_getaffinity`). The processes are the driver, its other
  descendants (a pool of extraction processes; Ray's workers and its own gcs/raylet) and the sandbox: the sandbox
  runs in its own process (`researchrl sandbox serve`) on the same machine, so it competes for the same cores and
  is counted; `cpu_floor_without_sandbox_s` leaves it out. Each process's CPU is measured as a delta over the
  window of the calls; a process that ends inside the window loses its share (`processes_ended` counts them).

`floor_s` = max(latency floor, CPU floor) is what a perfect implementation could reach on this machine;
`ratio_to_floor` = wall ÷ floor_s (target ≤ 1.25). The cache is off (`web=live`), so every call really goes
upstream. Prints one line per executor and writes bench/results/load_<executor><suffix>.json. Not a test: nothing
here passes or fails.
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


Snapshot = dict[tuple[int, float], tuple[str, float]]  # (pid, create time) -> (group, CPU seconds so far)


def cpu_snapshot(sandbox_pid: int) -> Snapshot:
    """CPU seconds (user + system) of every process of the run now: the driver, its other descendants, the sandbox's tree."""
    me = psutil.Process()
    sandbox = psutil.Process(sandbox_pid)
    groups: dict[int, tuple[psutil.Process, str]] = {me.pid: (me, "driver")}
    for proc in [sandbox, *sandbox.children(recursive=True)]:
        groups[proc.pid] = (proc, "sandbox")
    for proc in me.children(recursive=True):  # extraction processes; Ray's gcs, raylet and workers
        groups.setdefault(proc.pid, (proc, "children"))
    out: Snapshot = {}
    for pid, (proc, group) in groups.items():
        try:
            with proc.oneshot():
                times, created = proc.cpu_times(), proc.create_time()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # ended between listing and reading: it has no share to give in this snapshot
        out[(pid, created)] = (group, times.user + times.system)
    return out


def cpu_deltas(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """CPU seconds spent between two snapshots by each group; processes started inside count from zero."""
    spent = {"driver": 0.0, "children": 0.0, "sandbox": 0.0}
    for key, (group, seconds) in after.items():
        spent[group] += seconds - before.get(key, (group, 0.0))[1]
    counted = {group: sum(1 for g, _ in after.values() if g == group) for group in ("children", "sandbox")}
    return {**{f"{group}_cpu_s": round(s, 2) for group, s in spent.items()},
            "processes": counted, "processes_ended": len(before.keys() - after.keys())}


async def run(calls: list[ToolCall], base: str, executor: str, workers: int, sandbox_pid: int) -> dict[str, Any]:
    """All calls at once through the real tools; wall time, per-call seconds, error kinds and CPU seconds by process group."""
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

        before = cpu_snapshot(sandbox_pid)
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one(c) for c in calls))
        wall = time.perf_counter() - started
        cpu = cpu_deltas(before, cpu_snapshot(sandbox_pid))  # while the pool's processes are still alive
    errors: dict[str, int] = {}
    for _, kinds in outcomes:
        for kind in kinds:
            errors[kind] = errors.get(kind, 0) + 1
    seconds = sorted(s for s, _ in outcomes)
    return {"wall_s": round(wall, 2), "call_p50_s": round(seconds[len(seconds) // 2], 3),
            "call_max_s": round(seconds[-1], 3), "errors": errors, **cpu}


def floors(figures: dict[str, Any], calls: int, slowest: float, cores: int) -> dict[str, Any]:
    """The latency and CPU floors, the floor a perfect implementation could reach here, and wall ÷ each."""
    work = figures["driver_cpu_s"] + figures["children_cpu_s"]
    total = work + figures["sandbox_cpu_s"]
    floor, floor_alone = max(slowest, total / cores), max(slowest, work / cores)
    return {
        "usable_cores": cores,
        "total_cpu_s": round(total, 2),
        "cpu_per_call_ms": round(1000 * total / calls, 3),
        "driver_cpu_share": round(figures["driver_cpu_s"] / total, 3) if total else 0.0,
        "slowest_chain_s": round(slowest, 3),
        "cpu_floor_s": round(total / cores, 3),
        "cpu_floor_without_sandbox_s": round(work / cores, 3),
        "floor_s": round(floor, 3),
        "floor_bound": "latency" if slowest >= total / cores else "cpu",
        "floor_without_sandbox_s": round(floor_alone, 3),
        "ratio": round(figures["wall_s"] / slowest, 3),
        "ratio_to_floor": round(figures["wall_s"] / floor, 3),
        "ratio_to_floor_without_sandbox": round(figures["wall_s"] / floor_alone, 3),
    }


def summary(executor: str, calls: int, f: dict[str, Any]) -> str:
    """One line with every figure of an executor's run."""
    return (f"{executor:5s}: {calls} calls in {f['wall_s']} s | latency floor {f['slowest_chain_s']} s, ratio {f['ratio']} | "
            f"CPU s: driver {f['driver_cpu_s']} + children {f['children_cpu_s']} + sandbox {f['sandbox_cpu_s']} = "
            f"{f['total_cpu_s']} ({f['cpu_per_call_ms']} ms/call, driver share {f['driver_cpu_share']}) on "
            f"{f['usable_cores']} cores: CPU floor {f['cpu_floor_s']} s ({f['cpu_floor_without_sandbox_s']} s without "
            f"the sandbox) | floor {f['floor_s']} s ({f['floor_bound']}), ratio to floor {f['ratio_to_floor']} "
            f"({f['ratio_to_floor_without_sandbox']} without the sandbox) | p50 call {f['call_p50_s']} s; "
            f"errors {f['errors']}; processes {f['processes']}, {f['processes_ended']} ended mid-run")


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
    cores = len(os.sched_getaffinity(0))
    for executor in args.executors.split(","):
        port = free_port()
        server = spawn_sandbox(port, args.seed, "--latency-ms", str(MEDIAN_MS), "--latency-p99-ms", str(P99_MS))
        try:
            base = f"http://127.0.0.1:{port}"
            figures = asyncio.run(run(calls, base, executor, args.ray_workers, server.pid))
            requests = httpx.get(f"{base}/_faults", timeout=5).json()["requests"]
        finally:
            server.terminate()
            server.wait(timeout=10)
        if not requests:
            raise SystemExit(f"{executor}: no request reached the sandbox: {figures}")
        draws = FaultConfig(seed=args.seed, latency_ms=MEDIAN_MS, latency_p99_ms=P99_MS)
        slowest = max(draws.draw(n)[1] for n in range(requests))
        figures.update(upstream_requests=requests, **floors(figures, args.calls, slowest, cores))
        print(summary(executor, args.calls, figures))
        out = args.out_dir / f"load_{'asyncio' if executor == 'local' else executor}{args.suffix}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**settings, "executor": executor, **figures}, indent=2))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
