"""bf16 autocast (`amp`) against float32 for training's forward+backward on CPU: speed, and what it costs in accuracy.

Both arms run in this process on the embedded model with gradient checkpointing (as the cpu preset trains), on
sequences of real Wikipedia text from the shared corpus, interleaved (fp32, amp, fp32, amp, …) so a change in the
machine's load hits both. Then each arm takes the same --steps AdamW steps from the same weights and the loss on
other sequences is measured in float32: how much of a step bf16 rounding costs.

    .venv/bin/python bench/amp.py [--tokens 1500] [--repeats 4] [--steps 4]

Prints and writes bench/results/amp.json. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

from researchrl.policy.embedded import resolve_model_path
from researchrl.rl.precision import autocast, native_bf16
from researchrl.sandbox.config import shared_data_dir
from train_step import matmul_peak_gflops  # bench/ is the script's directory: one matmul probe for both benches


def cpu_times() -> list[int]:
    """The machine's CPU time counters (/proc/stat), to report how much the hypervisor took (steal)."""
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def sequences(tokenizer: Any, n: int, length: int) -> list[Any]:
    """`n` sequences of `length` tokens of consecutive corpus passages."""
    import torch

    rows = (json.loads(line) for line in (shared_data_dir() / "wiki" / "passages.jsonl").open())
    ids: list[int] = []
    for row in rows:
        ids += tokenizer(row["text"])["input_ids"]
        if len(ids) >= n * length:
            break
    return [torch.tensor([ids[i * length : (i + 1) * length]]) for i in range(n)]


def step_seconds(model: Any, ids: Any, amp: bool) -> float:
    """One forward+backward (loss on every token), gradients dropped."""
    start = time.perf_counter()
    with autocast(amp):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def trained_loss(base: Any, train: list[Any], held: list[Any], amp: bool) -> dict[str, float]:
    """AdamW steps on `train` (lr 5e-5, the warm-up's), then the float32 loss on `train` and on `held`."""
    import torch

    model = copy.deepcopy(base)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.0)
    for ids in train:
        with autocast(amp):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        seen = statistics.mean(float(model(input_ids=ids, labels=ids).loss) for ids in train)
        other = statistics.mean(float(model(input_ids=ids, labels=ids).loss) for ids in held)
    return {"loss_trained_sequences": seen, "loss_other_sequences": other}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1500, help="tokens per sequence (a GRPO trajectory is ~1-2k)")
    parser.add_argument("--repeats", type=int, default=4, help="timed forward+backward passes per arm")
    parser.add_argument("--steps", type=int, default=4, help="AdamW steps per arm for the accuracy check")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "amp.json", help="result file")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path("embedded")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.gradient_checkpointing_enable()
    model.train()
    data = sequences(tokenizer, 1 + args.steps + 2, args.tokens)
    counters = cpu_times()
    peaks = {"fp32": matmul_peak_gflops(), "bf16": matmul_peak_gflops(dtype=torch.bfloat16)}
    step_seconds(model, data[0], False)  # first passes build kernels: not timed
    step_seconds(model, data[0], True)
    times: dict[str, list[float]] = {"fp32": [], "amp": []}
    for _ in range(args.repeats):
        for arm in times:
            times[arm].append(step_seconds(model, data[0], arm == "amp"))
    train, held = data[1 : 1 + args.steps], data[1 + args.steps :]
    accuracy = {arm: trained_loss(model, train, held, arm == "amp") for arm in ("fp32", "amp")}
    spent = [b - a for a, b in zip(counters, cpu_times())]
    median = {arm: statistics.median(t) for arm, t in times.items()}
    result = {
        "command": "bench/amp.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "native_bf16": native_bf16(),
        "matmul_gflops_2048": peaks,
        "forward_backward_seconds": times,
        "median_seconds": median,
        "speedup_amp_pairs": [a / b for a, b in zip(times["fp32"], times["amp"])],  # each pair ran back to back
        "speedup_amp": statistics.median(a / b for a, b in zip(times["fp32"], times["amp"])),
        "after_adamw_steps": accuracy,
        "steal_fraction": spent[7] / sum(spent) if len(spent) > 7 and sum(spent) else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
