"""Cascade attention for HFPolicy's decode: the prefix every row shares is read once per step, not once per row.

Every episode starts with the same ~690-token system prompt and tool schemas. Copied into each row's cache, it is
half of what a 50-row evaluation step reads. Here the cache holds only each row's own tokens; each layer attends
over the shared prefix's keys (one batch-1 copy, all queries of all rows packed as one block) and over the row's
own keys (masked), then merges the two by their log-sum-exp: the same softmax over both, computed in two parts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

NAME = "researchrl_cascade"  # the attention implementation's name while a decode runs
PLAIN = ("llama", "qwen2", "qwen3")  # model types whose attention is a plain softmax (no soft-cap, sinks or window)


def plain_attention(config: Any) -> bool:
    """A model `config` whose attention is a plain softmax over all earlier positions (no sliding window)."""
    return config.model_type in PLAIN and not getattr(config, "use_sliding_window", False)


def fits(model: Any) -> bool:
    """Cascade reproduces this model's attention (a plain softmax, no sliding window) with its CPU kernel."""
    return model.device.type == "cpu" and plain_attention(model.config)


def cascade_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
                      dropout: float = 0.0, cascade_prefix: Any = None, **kwargs: Any) -> tuple[Any, None]:
    """Attention of `query` [B, Hq, q, D] over the shared prefix then the rows' own `key`/`value` [B, Hkv, L, D]."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cascade_prefix is None:  # a forward without a shared prefix: plain SDPA
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    b, heads, q, d = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    g = heads // kv_heads  # query heads per key/value head: packed as g x q query rows of that head
    packed = query.reshape(b, kv_heads, g * q, d)
    layer = cascade_prefix.layers[module.layer_idx]
    shared = packed.transpose(0, 1).reshape(1, kv_heads, b * g * q, d)  # every row's queries see the whole prefix
    out_p, lse_p = flash(shared, layer.keys, layer.values, 0.0, False, scale=scaling)
    out_p = out_p.reshape(kv_heads, b, g * q, d).transpose(0, 1)
    lse_p = lse_p.reshape(kv_heads, b, g * q).transpose(0, 1)
    if attention_mask is None:  # no padding: causal within the new tokens only
        attention_mask = torch.ones(q, length, dtype=torch.bool).tril(length - q)[None, None]
    if attention_mask.dtype == torch.bool:
        attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype).masked_fill(~attention_mask, float("-inf"))
    mask = attention_mask.expand(b, 1, q, length)[:, :, None].expand(b, 1, g, q, length).reshape(b, 1, g * q, length)
    out_s, lse_s = flash(packed, key, value, 0.0, False, attn_mask=mask, scale=scaling)
    top = torch.fmax(lse_p, lse_s)  # lse_s is -inf (or NaN) where a padding query sees none of its own row
    w_p, w_s = (lse_p - top).exp(), (lse_s - top).exp().nan_to_num(0.0)
    out = (out_p * w_p[..., None] + out_s.nan_to_num(0.0) * w_s[..., None]) / (w_p + w_s)[..., None]
    return out.to(query.dtype).reshape(b, heads, q, d).transpose(1, 2).contiguous(), None  # the log-sum-exps are fp32


@contextmanager
def cascading(model: Any) -> Iterator[None]:
    """The model attends through `cascade_attention` inside the block; the last block to leave restores its own."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, cascade_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    with _lock:  # decodes of two policies over one model may overlap (threads): a plain forward meanwhile gets SDPA
        users, own = _inside.get(id(model), (0, model.config._attn_implementation))
        _inside[id(model)] = (users + 1, own)
        model.config._attn_implementation = NAME
    try:
        yield
    finally:
        with _lock:
            users, own = _inside.pop(id(model))
            if users > 1:
                _inside[id(model)] = (users - 1, own)
            else:
                model.config._attn_implementation = own


_lock = threading.Lock()
_inside: dict[int, tuple[int, str]] = {}  # id(model) -> (blocks inside, the implementation to restore)
