"""One batched decode for HFPolicy: prefill the new tokens, then sample token by token, letting finished rows go.

transformers' `generate` decodes every row until the last one stops. An agent's turn ends at its own stop string,
EOS or budget, so in a 50-row evaluation about 30 % of the rows decoded were rows already done (the seed-0 run's
after_sft turns). Here a row that finishes hands over its tokens and KV at once, and the batch is compacted (one
copy of the live rows' KV) when the live rows fall to RETIRE_AT of its rows. A later turn's rows feed observations
of different lengths (47-325 tokens in a seed-1 run's rollouts): padded to the longest, about a third of a prefill's
tokens were padding; rows sorted by length run their prefill as a few forwards of similar widths instead.
bench/decode.py times these against padding and decoding every row to the last.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from researchrl.policy.base import FinishReason, Sampling
from researchrl.policy.cascade import cascading

RETIRE_AT = 0.75  # compact the batch when this fraction of its rows or fewer are still decoding
GROUP_COST = 128  # a forward's fixed cost counted in fed tokens, paid once per group of a grouped prefill


@dataclass(eq=False)
class Decoded:
    """One row's sampled tokens, the logprob of each under the model's untempered distribution, and why it ended."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    reason: FinishReason = "length"
    text: str = ""  # decoded so far, kept only while stop strings are watched


def decode(
    model: Any,
    cache: Any,
    input_ids: Any,
    attention: Any,
    samplings: list[Sampling],
    eos_id: int | None,
    piece: Callable[[int], str],
    on_finish: Callable[[int, int, Decoded], None],
    cache_arg: str,
    retire: bool = True,
    prefix: Any = None,
    groups: list[tuple[int, int]] | None = None,
) -> tuple[list[Decoded], int]:
    """Decode every row to its EOS, stop string or budget; returns the rows and the row-steps fed after the prefill.

    `cache` holds the first `cache.get_seq_length()` columns of `input_ids` already; `attention` marks padding with 0.
    Temperature and top-p are the batch's (HFPolicy batches only requests that share them); the first request's seed
    seeds the batch's draws.
    `on_finish(row, batch_index, decoded)` runs while the finished row is still in the cache, at `batch_index`;
    `cache_arg` is the forward's name for the cache (transformers 5.2x renamed `past_key_values` to `cache`).
    `prefix`, a batch-1 cache of tokens every row shares before its own, is attended by cascade (policy/cascade.py):
    `cache`, `input_ids` and `attention` then hold only what comes after it.
    `groups`: row ranges of a batch sorted by new tokens (`prefill_groups`), each prefilled by its own forward at its
    longest row's width, into a cache laid out beforehand (`batch_cache` with rows or a prefix); None: one forward.
    """
    import torch
    from transformers.cache_utils import Cache

    first = samplings[0]
    generator = torch.Generator().manual_seed(first.seed) if first.temperature > 0 and first.seed is not None else None
    rows = list(range(len(samplings)))  # batch index -> request index
    live = [True] * len(rows)
    out = [Decoded() for _ in samplings]
    filled, end = cache.get_seq_length(), attention.shape[1]
    shared = prefix.get_seq_length() if prefix is not None else 0
    positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, filled:] + shared  # left padding: each row counts from its first token
    extra: dict[str, Any] = {} if prefix is None else {"cascade_prefix": prefix}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        extra["logits_to_keep"] = 1

    def forward(ids: Any, mask: Any, at_positions: Any, at: int, kv: Any) -> Any:
        """The next-token logits of each row after feeding `ids` at cache columns at.. into `kv`."""
        return model(input_ids=ids, attention_mask=mask, position_ids=at_positions, cache_position=torch.arange(at, at + ids.shape[1]),
                     use_cache=True, **{cache_arg: kv}, **extra).logits[:, -1].float()

    row_steps = 0
    with nullcontext() if prefix is None else cascading(model):
        if groups is None or len(groups) == 1:
            logits = forward(input_ids[:, filled:], attention, positions, filled, cache)
        else:  # each group fed at its longest row's width, into views of the batch's cache rows
            widths = attention[:, filled:].sum(-1)  # each row's new tokens, right-aligned at column `end`
            parts = []
            for lo, hi in groups:
                at = end - int(widths[lo:hi].max())
                view = Cache(layers=[layer.rows(lo, hi, at) for layer in cache.layers])
                parts.append(forward(input_ids[lo:hi, at:], attention[lo:hi], positions[lo:hi, at - filled :], at, view))
            for layer in cache.layers:
                layer.show(end)
            logits = torch.cat(parts)
        filled, mask = end, attention
        while True:
            chosen = _choose(logits, first, generator)
            picked = torch.log_softmax(logits, -1).gather(1, chosen[:, None]).squeeze(1).tolist()
            for b, (r, token, logprob) in enumerate(zip(rows, chosen.tolist(), picked)):
                if live[b] and (reason := _advance(out[r], token, logprob, samplings[r], eos_id, piece)):
                    out[r].reason, live[b] = reason, False
                    on_finish(r, b, out[r])
            if not any(live):
                return out, row_steps
            if retire and sum(live) <= RETIRE_AT * len(rows):
                keep = torch.tensor([b for b, alive in enumerate(live) if alive])
                for layer in cache.layers:
                    layer.keep_rows(keep)
                rows, live = [rows[b] for b in keep.tolist()], [True] * len(keep)
                chosen, mask, positions = chosen[keep], mask[keep], positions[keep]
            positions = positions[:, -1:] + 1
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], 1)
            row_steps += len(rows)
            logits = forward(chosen[:, None], mask, positions, filled, cache)
            filled += 1


def prefill_groups(widths: list[int], cost: int = GROUP_COST) -> list[tuple[int, int]]:
    """Row ranges [lo, hi) that split a prefill whose rows feed `widths` new tokens (ascending) into forwards, each
    feeding its rows at its longest row's width: the split that feeds the fewest tokens, `cost` per forward counted."""
    best, cut = [0], [0]  # best[j]: fewest tokens to feed rows[:j]; cut[j]: where its last range starts
    for j in range(1, len(widths) + 1):
        tokens, i = min((best[i] + (j - i) * widths[j - 1] + cost, i) for i in range(j))
        best.append(tokens)
        cut.append(i)
    groups, j = [], len(widths)
    while j > 0:
        groups.append((cut[j], j))
        j = cut[j]
    return groups[::-1]


def _choose(logits: Any, sampling: Sampling, generator: Any) -> Any:
    """Greedy at temperature 0; else a draw from the tempered distribution cut to its top-p nucleus."""
    import torch

    if sampling.temperature <= 0:
        return logits.argmax(-1)
    scores = logits / sampling.temperature
    if sampling.top_p < 1.0:
        ordered, order = scores.sort(-1)  # ascending: drop the tail whose mass is at most 1 - top_p, keep the best token
        drop = ordered.softmax(-1).cumsum(-1) <= 1 - sampling.top_p
        drop[:, -1] = False
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)


def _advance(row: Decoded, token: int, logprob: float, sampling: Sampling, eos_id: int | None, piece: Callable[[int], str]) -> FinishReason | None:
    """Append one token; the reason the row ends here, if it does (EOS, then a stop string, then the budget)."""
    row.tokens.append(token)
    row.logprobs.append(logprob)
    if token == eos_id:
        return "eos"
    if sampling.stop:
        row.text += piece(token)
        if any(row.text.endswith(s) or s in row.text[-64:] for s in sampling.stop):
            return "stop"
    return "length" if len(row.tokens) >= sampling.max_new_tokens else None
