"""One CPU GRPO step, measured: seconds by phase, FLOP utilisation against a matmul peak measured in the same
run, and the process's peak RSS.

    .venv/bin/python bench/train_step.py [--group-size 8] [--model embedded|PATH]

Prints figures, writes bench/results/train_step_mb<N>[_gc].json. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from researchrl.data.load import load_questions
from researchrl.environment import RunningEnvironment
from researchrl.policy.embedded import resolve_model_path
from researchrl.config import merge
from researchrl.rl.config import load_config
from researchrl.rl.train import env_config
from researchrl.sandbox.config import shared_data_dir


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """FP32 matmul throughput of this machine right now (the denominator of utilisation)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-size", type=int, default=8, help="rollouts of the one question (G)")
    parser.add_argument("--model", default="embedded", help="model to train (a warmed-up run's sft/model varies rewards)")
    parser.add_argument("--micro-batch", type=int, default=2, help="sequences per forward/backward")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    args = parser.parse_args()
    from researchrl.rl.grpo import run_grpo
    from researchrl.rl.rollout import Rollout

    cfg = merge(load_config("cpu"), dict(group_size=args.group_size, questions_per_step=1, max_steps=1, save_steps=1000,
                                         micro_batch=args.micro_batch, gradient_checkpointing=args.gradient_checkpointing))
    peak = matmul_peak_gflops()
    questions = load_questions(shared_data_dir() / "wiki" / "questions.jsonl")[:16]
    env = RunningEnvironment(env_config(cfg), "deepresearcher")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rollout = Rollout(questions, env, cfg.agent, log_path=root / "trajectories.jsonl")
        started = time.perf_counter()
        run_grpo(resolve_model_path(args.model), questions, rollout, cfg, root / "grpo", root / "metrics.jsonl")
        total = time.perf_counter() - started
        step = json.loads((root / "metrics.jsonl").read_text().splitlines()[0])
        rows = [json.loads(line) for line in (root / "trajectories.jsonl").read_text().splitlines()]
    env.close()
    params = 134_515_008  # SmolLM2-135M (tied embeddings counted once)
    sampled = sum(r["sampled_tokens"] for r in rows)
    forwarded = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    update = step["seconds/update"]
    result = {
        "group_size": args.group_size,
        "micro_batch": args.micro_batch,
        "gradient_checkpointing": args.gradient_checkpointing,
        "trajectory_tokens_mean": forwarded / len(rows),
        "seconds": {"step": step["seconds/step"], "rollout (generation + tools + reward)": step["seconds/rollout"],
                    "update (ref + policy forward/backward, optimizer)": update, "process incl. load": total},
        "matmul_peak_gflops": peak,
        "achieved_gflops_trained_tokens": 6 * params * sampled / update / 1e9,
        "achieved_gflops_all_tokens": 6 * params * forwarded / update / 1e9,
        "utilisation_all_tokens": 6 * params * forwarded / update / 1e9 / peak,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }
    name = f"train_step_mb{args.micro_batch}{'_gc' if args.gradient_checkpointing else ''}.json"
    out = Path(__file__).parent / "results" / name
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
