"""CPU GRPO steps, measured: seconds by phase, FLOP utilisation against a matmul peak measured in the same run,
and the process's peak RSS, overall and per phase (RSS sampled every 20 ms in a thread).

    .venv/bin/python bench/train_step.py [--group-size 8] [--model embedded|PATH] [--steps 2] [--before FILE]

Two steps by default: AdamW allocates its two fp32 states at the first optimizer step, so the second step's update
(states, gradients and activations alive together) is the steady-state peak a run meets; one step under-reports it.
`--before FILE` copies an earlier result into this one under "before" (the same bench, same machine, same session).
Writes bench/results/train_step_mb<N>[_gc].json unless --out. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from researchrl.config import merge
from researchrl.data.load import load_questions
from researchrl.environment import RunningEnvironment
from researchrl.policy.embedded import resolve_model_path
from researchrl.rl.config import load_config
from researchrl.rl.rollout import Rollout
from researchrl.rl.train import env_config
from researchrl.sandbox.config import shared_data_dir

PARAMS = 134_515_008  # SmolLM2-135M (tied embeddings counted once)
GB = 1024**3


def matmul_peak_gflops(size: int = 2048, repeats: int = 10, dtype: Any = None) -> float:
    """Matmul throughput of this machine right now, fp32 unless `dtype` (taken before and after: cores are shared)."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


class RssSampler(threading.Thread):
    """The process's RSS every `every` seconds; `mark(name)` starts a phase, `peaks` holds each phase's largest RSS."""

    def __init__(self, every: float = 0.02):
        import psutil

        super().__init__(daemon=True)
        self.process = psutil.Process()
        self.every = every
        self.phase = "load"
        self.peaks: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        self.phase = phase

    def run(self) -> None:
        while True:
            rss = self.process.memory_info().rss / GB
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss)
            time.sleep(self.every)


class MarkedRollout(Rollout):
    """The bench's rollout: marks the sampler's phases (rollout N, then update N until the next rollout)."""

    def __init__(self, sampler: RssSampler, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sampler = sampler
        self.step = 0

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        self.step += 1
        self.sampler.mark(f"rollout {self.step}")
        try:
            return super().__call__(prompts, trainer)
        finally:
            self.sampler.mark(f"update {self.step}")


def step_figures(step: dict[str, Any], rows: list[dict[str, Any]], peak: float) -> dict[str, Any]:
    """One step's seconds, token counts and utilisation (6 x params x tokens over the update's seconds)."""
    lengths = [r["prompt_tokens"] + r["completion_tokens"] for r in rows]
    forwarded = sum(lengths)
    padded = len(rows) * (max(r["prompt_tokens"] for r in rows) + max(r["completion_tokens"] for r in rows))
    update = step["seconds/update"]
    return {
        "seconds": {"step": step["seconds/step"], "rollout (generation + tools + reward)": step["seconds/rollout"],
                    "update (ref + policy forward/backward, optimizer)": update},
        # padded_to_batch_max: what TRL's batch padding forwards (each row: the longest prompt + longest completion)
        "trajectory_tokens": {"mean": forwarded / len(rows), "min": min(lengths), "max": max(lengths),
                              "padded_to_batch_max": padded},
        "achieved_gflops_trained_tokens": 6 * PARAMS * sum(r["sampled_tokens"] for r in rows) / update / 1e9,
        "achieved_gflops_all_tokens": 6 * PARAMS * forwarded / update / 1e9,
        "utilisation_all_tokens": 6 * PARAMS * forwarded / update / 1e9 / peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-size", type=int, default=8, help="rollouts of the one question (G)")
    parser.add_argument("--model", default="embedded", help="model to train (a warmed-up sft/model varies rewards)")
    parser.add_argument("--micro-batch", type=int, default=1, help="sequences per forward/backward")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    parser.add_argument("--steps", type=int, default=2, help="GRPO steps, one question each (the last: steady state)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="another TrainConfig setting")
    parser.add_argument("--before", type=Path, help="an earlier result of this bench, kept under 'before'")
    parser.add_argument("--out", type=Path, help="result file (default: results/train_step_mb<N>[_gc].json)")
    args = parser.parse_args()
    from researchrl.rl.grpo import run_grpo

    sampler = RssSampler()
    sampler.start()
    extra = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    cfg = merge(load_config("cpu"), dict(group_size=args.group_size, questions_per_step=1, max_steps=args.steps,
                                         save_steps=1000, micro_batch=args.micro_batch,
                                         gradient_checkpointing=args.gradient_checkpointing, **extra))
    peak_before = matmul_peak_gflops()
    questions = load_questions(shared_data_dir() / "wiki" / "questions.jsonl")[:16]
    env = RunningEnvironment(env_config(cfg), "deepresearcher")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rollout = MarkedRollout(sampler, questions, env, cfg.agent, log_path=root / "trajectories.jsonl")
        started = time.perf_counter()
        run_grpo(resolve_model_path(args.model), questions, rollout, cfg, root / "grpo", root / "metrics.jsonl")
        total = time.perf_counter() - started
        steps = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
        rows = [json.loads(line) for line in (root / "trajectories.jsonl").read_text().splitlines()]
    env.close()
    peak_after = matmul_peak_gflops()
    peak = max(peak_before, peak_after)  # the less disturbed of the two is the machine's peak
    per_step = [step_figures(s, [r for r in rows if r["step"] == s["step"]], peak) for s in steps]
    updates = sum(s["seconds/update"] for s in steps)
    forwarded = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    result = {
        "group_size": args.group_size,
        "micro_batch": args.micro_batch,
        "gradient_checkpointing": args.gradient_checkpointing,
        "settings": extra,
        "steps": len(steps),
        "trajectory_tokens_mean": forwarded / len(rows),
        "seconds": {"step (mean)": sum(s["seconds/step"] for s in steps) / len(steps),
                    "rollout (mean)": sum(s["seconds/rollout"] for s in steps) / len(steps),
                    "update (mean)": updates / len(steps), "process incl. load": total},
        "matmul_peak_gflops": peak,
        "matmul_peak_gflops_before_after_steps": [peak_before, peak_after],
        "achieved_gflops_all_tokens": 6 * PARAMS * forwarded / updates / 1e9,
        "utilisation_all_tokens": 6 * PARAMS * forwarded / updates / 1e9 / peak,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "peak_rss_gb_by_phase": sampler.peaks,
        "per_step": per_step,
    }
    if args.before:
        result["before"] = json.loads(args.before.read_text())
    name = f"train_step_mb{args.micro_batch}{'_gc' if args.gradient_checkpointing else ''}.json"
    out = args.out or Path(__file__).parent / "results" / name
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "before"}, indent=2))


if __name__ == "__main__":
    main()
