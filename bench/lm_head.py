"""Training's LM head on CPU: TRL's fused LM head against the model's own head (`fused_lm_head`), GRPO and warm-up.

GRPO: one forward+backward of LeanGRPOTrainer's policy log-probs (with gradient checkpointing, one sequence per
micro-batch) on the embedded model, for a sequence shaped like a trajectory: --prompt-tokens of
prompt, then --completion-tokens scored, of real Wikipedia text, fp32 and amp. Warm-up: one forward+backward of
the SFT loss on the same sequence (the prompt's labels -100), TRL's SFTTrainer against PlainHeadSFTTrainer, amp.
The six arms take turns in this process, --repeats rounds, so a change in the machine's load hits every arm; the
log-probs and losses of the arms are compared too (the own head must score what TRL's does).

    .venv/bin/python bench/lm_head.py [--prompt-tokens 700] [--completion-tokens 800] [--repeats 4]

Prints and writes bench/results/lm_head.json. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from amp import cpu_times, sequences  # bench/ is the script's directory
from researchrl.policy.embedded import resolve_model_path
from researchrl.rl.config import checkpointing_flag
from researchrl.rl.grpo import logprob_chunk

ARMS = [(fused, amp) for amp in (False, True) for fused in (True, False)]


def trainer(path: str, out: str) -> Any:
    """A LeanGRPOTrainer over the model at `path` (no reference model: only the policy's pass is timed)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from researchrl.rl.grpo import LeanGRPOTrainer

    args = GRPOConfig(output_dir=out, per_device_train_batch_size=2, num_generations=2, beta=0.0, use_cpu=True,
                      report_to="none", bf16=False, disable_dropout=True, **checkpointing_flag(True))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return LeanGRPOTrainer(model=model, args=args, reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
                           train_dataset=Dataset.from_list([{"prompt": "q"}] * 2),
                           processing_class=AutoTokenizer.from_pretrained(path))


def sft_trainers(path: str, out: str) -> dict[str, Any]:
    """TRL's SFTTrainer and PlainHeadSFTTrainer over one model of their own, as the warm-up builds them with amp."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from researchrl.rl.sft_trainer import PlainHeadSFTTrainer

    args = SFTConfig(output_dir=out, per_device_train_batch_size=1, use_cpu=True, report_to="none", bf16=True,
                     max_length=None, **checkpointing_flag(True))
    rows = Dataset.from_list([{"input_ids": [1, 2], "labels": [1, 2]}])
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.gradient_checkpointing_enable()  # the Trainer would at train(); these arms call compute_loss directly
    model.train()
    return {f"warm-up {name}, amp": cls(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
            for name, cls in (("fused", SFTTrainer), ("own", PlainHeadSFTTrainer))}


def sft_loss(sft: Any, ids: Any, keep: int) -> Any:
    """The warm-up's loss on `ids`, its last `keep` tokens labelled, under the trainer's autocast."""
    import torch

    labels = ids.clone()
    labels[:, :-keep] = -100
    with sft.accelerator.autocast():  # what the warm-up's prepared model.forward runs under
        return sft.compute_loss(sft.model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})


def sft_step(sft: Any, ids: Any, keep: int) -> tuple[float, Any]:
    """Seconds of one warm-up loss forward+backward under the trainer's autocast, and the loss."""
    start = time.perf_counter()
    loss = sft_loss(sft, ids, keep)
    loss.backward()
    sft.model.zero_grad(set_to_none=True)
    return time.perf_counter() - start, loss.detach()


def score(lean: Any, ids: Any, keep: int, fused: bool, amp: bool) -> tuple[float, Any]:
    """Seconds of one scoring forward+backward (entropies too, as GRPO asks) and the log-probs it gave."""
    import torch

    lean.fused_head, lean.amp = fused, amp
    start = time.perf_counter()
    logps, _, _ = lean._get_per_token_logps_and_entropies(lean.model, ids, torch.ones_like(ids), keep, 1,
                                                          compute_entropy=True)
    logps.sum().backward()
    lean.model.zero_grad(set_to_none=True)
    return time.perf_counter() - start, logps.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=700, help="unscored tokens first (system prompt + question)")
    parser.add_argument("--completion-tokens", type=int, default=800, help="scored tokens after them (turns, observations)")
    parser.add_argument("--repeats", type=int, default=4, help="rounds of the six arms")
    parser.add_argument("--chunk", type=int, default=4096, help="logprob_chunk of the fused head (the cpu preset's)")
    args = parser.parse_args()
    path = resolve_model_path("embedded")
    with tempfile.TemporaryDirectory() as out:
        lean = trainer(path, out)
        lean.model.gradient_checkpointing_enable()
        lean.model.train()
        ids = sequences(lean.processing_class, 1, args.prompt_tokens + args.completion_tokens)[0]
        keep = args.completion_tokens
        sft = sft_trainers(path, out)
        arms = {f"{'fused' if f else 'own'}, {'amp' if a else 'fp32'}": (lambda f=f, a=a: score(lean, ids, keep, f, a))
                for f, a in ARMS}
        arms.update({name: (lambda t=t: sft_step(t, ids, keep)) for name, t in sft.items()})
        seconds: dict[str, list[float]] = {name: [] for name in arms}
        outputs: dict[str, Any] = {}
        stat = cpu_times()
        with logprob_chunk(args.chunk):
            for run in arms.values():  # one untimed round: first-call allocations
                run()
            for _ in range(args.repeats):
                for name, run in arms.items():
                    took, outputs[name] = run()
                    seconds[name].append(took)
                    print(f"{name}: {took:.1f} s", flush=True)
        after = cpu_times()
    busy = [b - a for a, b in zip(stat, after)]
    median = {name: statistics.median(s) for name, s in seconds.items()}
    result = {
        "what": f"LeanGRPOTrainer policy scoring and the warm-up's SFT loss, forward+backward with gradient "
                f"checkpointing, 1 sequence of {args.prompt_tokens} prompt + {keep} scored tokens, embedded model, "
                f"arms interleaved",
        "seconds": seconds,
        "median_seconds": median,
        "own_vs_fused_speedup": {"fp32": median["fused, fp32"] / median["own, fp32"],
                                 "amp": median["fused, amp"] / median["own, amp"],
                                 "warm-up, amp": median["warm-up fused, amp"] / median["warm-up own, amp"]},
        "amp_vs_fp32_speedup_own_head": median["own, fp32"] / median["own, amp"],
        "own_head_vs_fused_max_abs_logprob_diff": {
            mode: float((outputs[f"own, {mode}"] - outputs[f"fused, {mode}"]).abs().max()) for mode in ("fp32", "amp")},
        "warm_up_loss": {name: float(outputs[name]) for name in sft},
        "steal_percent": 100 * busy[7] / sum(busy),
    }
    out_file = Path(__file__).parent / "results" / "lm_head.json"
    out_file.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
