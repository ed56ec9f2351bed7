"""Questions per minute through `researchrl serve agent` at several concurrencies, against `ask`'s one-at-a-time loop.

Baseline: the same questions answered one after another in this process, as `researchrl ask` runs an episode
(one policy, one open environment, `run_episode` per question). Served: the real command in a subprocess
(same model, same flags), fed by the `openai` client at each concurrency. Both use the embedded model
(or --model), greedy decoding, the offline sandbox and the same turn and token budgets.

    .venv/bin/python bench/serve.py [--questions 32] [--concurrency 1,8,32] [--model embedded] [--note TEXT]

The baseline runs before and after the server (speedups are against the faster of the two, so machine noise
does not flatter the server); `speedup_vs_first` compares each concurrency with the first one given, same server. Prints questions/minute, seconds and the policy's batch sizes per setting as JSON
(with the load average at start and end) and writes it to bench/results/serve.json. Not a test: nothing here
passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from researchrl.agent.loop import AgentConfig, run_episode
from researchrl.data.load import load_questions
from researchrl.environment import EnvConfig, open_environment
from researchrl.policy.base import Sampling
from researchrl.policy.hf import HFPolicy
from researchrl.sandbox.config import shared_data_dir


async def one_after_another(model: str, questions: list[str], turns: int, tokens: int) -> tuple[float, int]:
    """Seconds and policy-sampled tokens to answer every question in turn, as `ask` does (greedy, one at a time)."""
    from researchrl.types import Question

    policy = HFPolicy.load(model)
    cfg = AgentConfig(max_turns=turns, sampling=Sampling(temperature=0.0, max_new_tokens=tokens))
    try:
        async with open_environment(EnvConfig()) as tools:
            start, sampled = time.perf_counter(), 0
            for i, question in enumerate(questions):
                sampled += sum((await run_episode(Question(f"q{i}", question, ()), policy, tools, cfg)).mask)
            return time.perf_counter() - start, sampled
    finally:
        await policy.aclose()


def start_server(model: str, turns: int, tokens: int) -> tuple[subprocess.Popen[str], str]:
    """The real command on a free port; returns once /health answers."""
    command = [sys.executable, "-m", "researchrl.cli", "serve", "agent", "--port", "0", "--model", model,
               "--max-turns", str(turns), "--max-new-tokens", str(tokens), "--max-concurrency", "32"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "COLUMNS": "250"})
    found = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline())  # type: ignore[union-attr]
    if not found:
        process.kill()
        raise SystemExit("the server did not print its address")
    url = found.group(0)
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not become healthy in 2 minutes")


async def through_server(url: str, questions: list[str], concurrency: int) -> tuple[float, int]:
    """Seconds and policy-sampled tokens to get every answer with at most `concurrency` requests in flight."""
    slots = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=1800) as client:

        async def ask(question: str) -> int:
            async with slots:
                reply = await client.chat.completions.create(model="researchrl-agent",
                                                             messages=[{"role": "user", "content": question}])
                return reply.usage.completion_tokens

        start = time.perf_counter()
        sampled = await asyncio.gather(*(ask(q) for q in questions))
        return time.perf_counter() - start, sum(sampled)


def batch_sizes(url: str) -> dict[str, int]:
    """The server's policy batch-size histogram so far."""
    return httpx.get(f"{url}/health", timeout=10).json()["policy_batch_sizes"]


def ask_baseline(args: argparse.Namespace, questions: list[str], results: dict[str, Any], name: str) -> float:
    """The one-after-another run, recorded under `name`; returns the fastest baseline so far."""
    seconds, sampled = asyncio.run(one_after_another(args.model, questions, args.max_turns, args.max_new_tokens))
    results[name] = {"seconds": round(seconds, 1), "questions_per_minute": round(60 * len(questions) / seconds, 2),
                     "sampled_tokens": sampled}
    print(json.dumps({name: results[name]}), flush=True)
    return min(r["seconds"] for key, r in results.items() if key.startswith("ask_"))


def main() -> None:
    """Baseline first, then the server at each concurrency on the same questions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=32, help="Questions per setting (the first N of the wiki set).")
    parser.add_argument("--concurrency", default="1,8,32", help="Comma-separated request concurrencies.")
    parser.add_argument("--model", default="embedded", help="Model for both sides (a run's grpo/model follows the protocol).")
    parser.add_argument("--max-turns", type=int, default=4, help="Turn budget per episode.")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="Tokens per policy turn.")
    parser.add_argument("--note", default="", help="Free text stored with the figures.")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed bench still stops its server (finally below)
    questions = [q.question for q in load_questions(shared_data_dir() / "wiki" / "questions.jsonl")][: args.questions]
    load_start = os.getloadavg()
    results: dict[str, Any] = {}
    ask_baseline(args, questions, results, "ask_before")
    process, url = start_server(args.model, args.max_turns, args.max_new_tokens)
    try:
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            before = batch_sizes(url)
            seconds, sampled = asyncio.run(through_server(url, questions, concurrency))
            after = batch_sizes(url)
            results[f"serve_c{concurrency}"] = {
                "seconds": round(seconds, 1),
                "questions_per_minute": round(60 * len(questions) / seconds, 2),
                "sampled_tokens": sampled,
                "policy_batch_sizes": {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)},
            }
            print(json.dumps({f"serve_c{concurrency}": results[f"serve_c{concurrency}"]}), flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    baseline = ask_baseline(args, questions, results, "ask_after")
    served = [k for k in results if k.startswith("serve_")]
    for key in served:
        results[key]["speedup_vs_ask"] = round(baseline / results[key]["seconds"], 2)
        results[key]["speedup_vs_first"] = round(results[served[0]]["seconds"] / results[key]["seconds"], 2)
    out = {"questions": len(questions), "model": args.model, "max_turns": args.max_turns,
           "max_new_tokens": args.max_new_tokens, "cpus": os.cpu_count(), "load_start": load_start,
           "load_end": os.getloadavg(), "note": args.note, **results}
    print(json.dumps(out, indent=1))
    path = Path(__file__).parent / "results" / "serve.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
