"""The prompt prefix a batch's rows share runs through the model once per step, not once per row.

Every rollout starts with the same system prompt and tool schemas (~690 of a ~900-token row on the cpu preset), and
TRL scores each row whole: the policy's forward and backward and the reference's forward spent most of their time on
that same prefix. Here the prefix runs once; each row runs only its own tokens over the prefix's keys and values
(attention is causal: no prefix position sees a row's tokens, so this is the same function). With gradients, the rows'
backward passes gather the gradient of the prefix's keys and values in leaf copies, and one backward through the
prefix before the optimizer step adds it to the weights: the gradient of scoring every row whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from researchrl.policy.cascade import plain_attention
from researchrl.policy.kvcache import cache_keyword


def fits(model: Any) -> bool:
    """A model whose attention over cached keys is its attention over the whole row (plain softmax, no window)."""
    return plain_attention(model.config.get_text_config())


def common_length(rows: list[list[int]]) -> int:
    """Length of the token prefix all `rows` start with."""
    first = rows[0]
    n = min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != first[i] for r in rows):
            return i
    return n


@dataclass
class SharedPrefix:
    """The keys and values of `tokens` per layer (`kv`, in the graph when computed with gradients) and the leaf copies
    the rows attend to, whose `.grad` gathers what the rows' backward passes send to the prefix."""

    tokens: list[int]
    kv: list[tuple[Any, Any]]
    leaves: list[tuple[Any, Any]]
    cache_arg: str  # the decoder's keyword for a cache ("cache" in transformers 5.x, "past_key_values" before)

    @classmethod
    def compute(cls, model: Any, tokens: list[int]) -> SharedPrefix:
        """Run `tokens` through `model`'s decoder (with gradients when they are enabled)."""
        import torch
        from transformers import DynamicCache

        decoder = model.get_decoder()
        cache_arg = cache_keyword(decoder.forward)
        cache = DynamicCache(config=model.config)
        ids = torch.tensor([tokens], device=model.device)
        decoder(input_ids=ids, use_cache=True, **{cache_arg: cache})
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        grad = torch.is_grad_enabled()
        leaves = [(k.detach().requires_grad_(grad), v.detach().requires_grad_(grad)) for k, v in kv]
        return cls(tokens, kv, leaves, cache_arg)

    def shared_with(self, row: list[int], most: int) -> int:
        """How many of `row`'s first tokens (at most `most`) are this prefix's."""
        return common_length([self.tokens[:most], row[:most]])

    def scored_logits(self, model: Any, row: list[int], shared: int, keep: int) -> Any:
        """`scored_logits` of one unpadded `row` whose first `shared` tokens are this prefix's: only the rest runs."""
        import torch
        from transformers import DynamicCache

        from researchrl.rl.lm_head import scored_logits

        cache = DynamicCache(ddp_cache_data=[(k[:, :, :shared], v[:, :, :shared]) for k, v in self.leaves])
        ids = torch.tensor([row[shared:]], device=self.leaves[0][0].device)
        mask = torch.ones(1, len(row), dtype=torch.long, device=ids.device)
        return scored_logits(model, ids, mask, keep, **{self.cache_arg: cache})

    def backward(self) -> None:
        """Send the gradient the rows gathered in the leaves through the prefix's forward into the weights."""
        import torch

        pairs = [(t, leaf.grad) for kv, leaves in zip(self.kv, self.leaves) for t, leaf in zip(kv, leaves)
                 if leaf.grad is not None]
        if pairs:
            torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
