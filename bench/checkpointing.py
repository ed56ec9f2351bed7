"""Gradient checkpointing on CPU: GRPO scoring and the warm-up's loss, forward+backward, with and without it.

The arms of bench/lm_head.py that the cpu preset runs (the model's own LM head, amp), each with gradient
checkpointing on and off, on one sequence shaped like a trajectory (--prompt-tokens unscored, then
--completion-tokens scored, of real Wikipedia text), embedded model. The four arms take turns in this process,
--repeats rounds, so a change in the machine's load hits every arm. Memory: each arm's peak RSS above the RSS it
started at (sampled every 10 ms), i.e. what its activations and gradients add. Gradients are compared too
(checkpointing recomputes the forward: the same gradient, up to bf16 rounding order).

    .venv/bin/python bench/checkpointing.py [--prompt-tokens 700] [--completion-tokens 800] [--repeats 3]

Prints and writes bench/results/checkpointing.json. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from amp import cpu_times, sequences  # bench/ is the script's directory
from lm_head import score, sft_loss, sft_step, sft_trainers, trainer
from train_step import RssSampler

from researchrl.policy.embedded import resolve_model_path


def checkpointed(model: Any, on: bool) -> None:
    """Turn the model's gradient checkpointing on or off (transformers' own switch)."""
    if on:
        model.gradient_checkpointing_enable()
    else:
        model.gradient_checkpointing_disable()


def gradient(model: Any) -> Any:
    """All of the model's gradients as one vector (then cleared)."""
    import torch

    flat = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=700, help="unscored tokens first (system prompt + question)")
    parser.add_argument("--completion-tokens", type=int, default=800, help="scored tokens after them (turns, observations)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the four arms")
    args = parser.parse_args()
    path = resolve_model_path("embedded")
    sampler = RssSampler(every=0.01)
    sampler.start()
    with tempfile.TemporaryDirectory() as out:
        lean = trainer(path, out)
        lean.model.train()
        warm = sft_trainers(path, out)["warm-up own, amp"]
        ids = sequences(lean.processing_class, 1, args.prompt_tokens + args.completion_tokens)[0]
        keep = args.completion_tokens

        arms = {}
        for on in (True, False):
            label = "checkpointing" if on else "no checkpointing"
            arms[f"GRPO scoring, {label}"] = (lean.model, on, lambda: score(lean, ids, keep, fused=False, amp=True)[0])
            arms[f"warm-up, {label}"] = (warm.model, on, lambda: sft_step(warm, ids, keep)[0])
        seconds: dict[str, list[float]] = {name: [] for name in arms}
        added_gb: dict[str, float] = {name: 0.0 for name in arms}
        for model, on, run in arms.values():  # one untimed round: first-call allocations
            checkpointed(model, on)
            run()
        stat = cpu_times()
        for _ in range(args.repeats):
            for name, (model, on, run) in arms.items():
                checkpointed(model, on)
                base = sampler.process.memory_info().rss / 2**30
                sampler.peaks[name] = base
                sampler.mark(name)
                seconds[name].append(run())
                sampler.mark("between")
                added_gb[name] = max(added_gb[name], sampler.peaks[name] - base)
                print(f"{name}: {seconds[name][-1]:.1f} s, +{sampler.peaks[name] - base:.2f} GB", flush=True)
        after = cpu_times()
        grads = {}
        for on in (True, False):  # the warm-up's gradient either way (sft_step clears it, so recompute here)
            checkpointed(warm.model, on)
            sft_loss(warm, ids, keep).backward()
            grads[on] = gradient(warm.model)
    busy = [b - a for a, b in zip(stat, after)]
    median = {name: statistics.median(s) for name, s in seconds.items()}
    result = {
        "what": f"own LM head, amp, forward+backward of 1 sequence of {args.prompt_tokens} prompt + {keep} scored "
                f"tokens, embedded model, with and without gradient checkpointing, arms interleaved",
        "seconds": seconds,
        "median_seconds": median,
        "speedup_without_checkpointing": {
            part: median[f"{part}, checkpointing"] / median[f"{part}, no checkpointing"] for part in ("GRPO scoring", "warm-up")},
        "peak_rss_added_gb": added_gb,
        "warm_up_gradient_max_abs_diff": float((grads[True] - grads[False]).abs().max()),
        "warm_up_gradient_max_abs": float(grads[True].abs().max()),
        "steal_percent": 100 * busy[7] / sum(busy),
    }
    out_file = Path(__file__).parent / "results" / "checkpointing.json"
    out_file.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
