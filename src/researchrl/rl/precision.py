"""Mixed precision for training on CPU: bfloat16 autocast over float32 weights where the CPU computes bf16 natively.

On a CPU with AMX or AVX512-BF16 a bf16 matmul runs ~3.5x the float32 rate (685 vs 197 GFLOP/s at 2048³ on the
2-core machine), and six forward+backward passes of the embedded model on warm-up rows took 83 s instead of 155 s
(bench/amp.py measures it side by side).
The price: bf16 rounding in the backward makes each step a little less effective (after those six Adam steps the
float32 loss was 0.352 instead of 0.341 on the rows trained, 0.422 instead of 0.413 on four others).
Weights, gradients, optimizer state and rollout sampling stay float32. TRL's SFTConfig and GRPOConfig default to
`bf16=True` (accelerate's autocast around the whole forward, generation and the vLLM sync probe included), so both
are set explicitly: the warm-up autocasts when `amp` is on, and GRPO autocasts only its scoring passes
(LeanGRPOTrainer.amp: policy and reference log-probs, and so their backward).
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from typing import Any

from researchrl.rl.config import TrainConfig


def native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AMX tiles or AVX512-BF16); without them bf16 is emulated, slower."""
    import torch

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu's own checks (private, so guarded)
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_amp(cfg: TrainConfig) -> TrainConfig:
    """`amp` unset: on for float32 weights on a CPU with native bf16, else off (GPUs train in `bf16` instead).

    Off under vLLM rollouts too: there TRL's importance-sampling correction compares the server's float32 sampling
    log-probs with the trainer's, and bf16 scoring would put its rounding into that ratio (call it after
    resolve_engine)."""
    if cfg.amp is not None:
        return cfg
    import torch

    native = not cfg.bf16 and not cfg.use_vllm and not torch.cuda.is_available() and native_bf16()
    return dataclasses.replace(cfg, amp=native)


def resolve_eval_bf16(cfg: TrainConfig) -> TrainConfig:
    """`eval_bf16` unset: evaluate in bf16 where training computes in it (`bf16`, or `amp` once resolved).

    On a CPU with native bf16 a 50-row evaluation decode was ~1.6x faster with bf16 weights (bench/decode.py --bf16):
    half the bytes per matmul and per KV read. Greedy text then differs from a float32 decode token by token, so
    every phase of a run is evaluated at the one precision its config.toml records."""
    if cfg.eval_bf16 is not None:
        return cfg
    return dataclasses.replace(cfg, eval_bf16=bool(cfg.bf16 or cfg.amp))


def autocast(enabled: bool, device: str = "cpu") -> Any:
    """bf16 autocast on `device` while inside when `enabled`, else nothing."""
    import torch

    return torch.autocast(device, dtype=torch.bfloat16) if enabled else nullcontext()
