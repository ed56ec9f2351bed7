"""The model's own LM head, in fp32, over the positions a loss scores: on CPU TRL's fused LM head is slower.

TRL's SFT and GRPO trainers score tokens through a fused, vocabulary-chunked LM head. Where its Triton kernel runs
(CUDA) that saves memory; on CPU its torch fallback projects every position, prompt included, recomputes the logits
in the backward, and casts each chunk to fp32: under amp a scoring forward+backward took 1.1-1.2x as long as
through the model's own head (bench/lm_head.py, arms interleaved). Here the backbone runs under the caller's
autocast and the head projects only the scored positions, in fp32 as TRL's does, so log-probs keep fp32 precision.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from researchrl.rl.config import TrainConfig

# config fields by which a model scales or caps its logits after the head; TRL's fused head applies them, ours not
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def resolve_lm_head(cfg: TrainConfig) -> TrainConfig:
    """`fused_lm_head` unset: TRL's fused head where its Triton kernel runs (a CUDA GPU), the model's own on CPU."""
    if cfg.fused_lm_head is not None:
        return cfg
    import torch

    return dataclasses.replace(cfg, fused_lm_head=torch.cuda.is_available())


def plain_head_fits(model: Any) -> bool:
    """Whether the model's logits are its head's projection as is (no scale or softcap after it), as `scored_logits` assumes."""
    config = model.config.get_text_config()
    return all(getattr(config, name, None) in (None, 1.0) for name in LOGIT_TRANSFORMS)


def scored_logits(model: Any, input_ids: Any, attention_mask: Any, keep: int, **cache: Any) -> Any:
    """fp32 logits predicting the last `keep` tokens of each row, called through `model` (a DDP wrapper too, whose
    forward must run for its gradients to be reduced): the backbone once, the head over those positions only;
    `cache`: keys and values of positions before `input_ids` (rl/shared_prefix.py)."""
    from accelerate.utils import extract_model_from_parallel

    base = extract_model_from_parallel(model, keep_torch_compile=False)
    if not getattr(base, "scores_positions", False):
        add_scored_forward(base)
    return model(input_ids=input_ids, attention_mask=attention_mask, scored_positions=keep, **cache)


def add_scored_forward(model: Any) -> None:
    """Let `model(..., scored_positions=k)` return `scored_logits`'s logits; without it the forward is the original
    one (TRL patches its fused head in the same way, `trl.trainer.utils.add_fused_lm_head`)."""
    import functools
    import types

    import torch
    import torch.nn.functional as F

    original = model.forward

    @functools.wraps(type(model).forward)  # generate validates its keyword arguments against this signature
    def forward(self: Any, *args: Any, scored_positions: int | None = None, **kwargs: Any) -> Any:
        if scored_positions is None:
            return original(*args, **kwargs)
        hidden = self.get_decoder()(*args, use_cache=False, **kwargs).last_hidden_state
        head = self.get_output_embeddings()
        bias = None if head.bias is None else head.bias.float()
        with torch.autocast(hidden.device.type, enabled=False):
            return F.linear(hidden[:, -scored_positions - 1 : -1].float(), head.weight.float(), bias)

    model.forward = types.MethodType(forward, model)
    model.scores_positions = True
