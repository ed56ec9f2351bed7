"""Multi-turn generation with HFPolicy: the turn cache (only new tokens prefilled) vs a full prefill every turn.

Rows grow like agent episodes: each turn's context is the last context, the tokens just sampled, then an
observation of about --observation-tokens tokens; every row is one `generate` request of a concurrent batch.
Both arms run the same rows on the same embedded model in this process, greedy, so they sample the same tokens
(the script checks it). A decode-step column times one new token at --rows x --context tokens through
transformers' DynamicCache (a concatenation per token) and through our GrowingLayer cache (a write in place).

    .venv/bin/python bench/turns.py [--rows 16] [--turns 5] [--max-new-tokens 64] [--note TEXT]

Prints and writes bench/results/turns.json. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from itertools import islice
from pathlib import Path
from typing import Any

from researchrl.agent import render
from researchrl.agent.protocols.deepresearcher import DeepResearcherProtocol
from researchrl.data.load import load_questions
from researchrl.policy.base import Context, Sampling
from researchrl.policy.hf import HFPolicy
from researchrl.prompts import BROWSE_WEBPAGE_SCHEMA, WEB_SEARCH_SCHEMA
from researchrl.sandbox.config import shared_data_dir


async def turns(policy: HFPolicy, starts: list[list[int]], observations: list[list[list[int]]], budgets: list[list[int]]) -> dict[str, Any]:
    """Greedy turns batched across rows: row i's turn k samples at most budgets[i][k] tokens, then observations[i][k]
    follows, and row i stops after len(budgets[i]) turns. Seconds, sampled tokens, row-steps decoded and each row's
    token stream."""
    contexts = [list(s) for s in starts]
    streams: list[list[int]] = [[] for _ in starts]
    before, start = policy.row_steps, time.perf_counter()
    for k in range(max(map(len, budgets))):
        rows = [i for i, b in enumerate(budgets) if len(b) > k]
        samples = await asyncio.gather(*(policy.generate(Context(contexts[i], [], ""), Sampling(temperature=0.0, max_new_tokens=budgets[i][k]))
                                         for i in rows))
        for i, s in zip(rows, samples):
            streams[i] += s.token_ids
            contexts[i] = contexts[i] + s.token_ids + observations[i][k]
    seconds = time.perf_counter() - start
    tokens = sum(map(len, streams))
    return {"seconds": seconds, "sampled_tokens": tokens, "tokens_per_s": tokens / seconds, "row_steps": policy.row_steps - before,
            "final_context_tokens": sum(map(len, contexts)) // len(contexts), "streams": streams}


def passage_observations(tok: Any, sizes: list[int]) -> list[list[int]]:
    """Tool responses of `sizes` tokens (the j-th: corpus passages j onward, cut), each closing one turn and opening
    the next."""
    with (shared_data_dir() / "wiki" / "passages.jsonl").open() as lines:  # the first lines only: bench/decode.py calls this per row
        passages = [json.loads(line)["text"] for line in islice(lines, len(sizes) + 8)]
    return [tok.hf.encode(f"<|im_end|>\n<|im_start|>user\n<tool_response>\n{' '.join(passages[j : j + 8])}")[:size]
            + tok.hf.encode("\n</tool_response><|im_end|>\n<|im_start|>assistant\n") for j, size in enumerate(sizes)]


def decode_step(policy: HFPolicy, rows: int, context: int, growing: bool, steps: int = 6) -> float:
    """Milliseconds per decoded token at `rows` x `context` cached tokens through one kind of cache."""
    import torch
    from transformers import DynamicCache

    from researchrl.policy.kvcache import batch_cache

    cfg = policy.model.config
    heads, dim = cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    with torch.inference_mode():
        prefix = DynamicCache()
        for layer in range(cfg.num_hidden_layers):
            prefix.update(torch.randn(1, heads, context, dim), torch.randn(1, heads, context, dim), layer)
        if growing:
            cache = batch_cache(prefix, [None] * rows, steps + 1, cfg.num_hidden_layers)
        else:
            cache = DynamicCache()
            for layer in range(cfg.num_hidden_layers):
                cache.update(prefix.layers[layer].keys.expand(rows, -1, -1, -1).clone(),
                             prefix.layers[layer].values.expand(rows, -1, -1, -1).clone(), layer)
        token = torch.zeros(rows, 1, dtype=torch.long)
        mask = torch.ones(rows, context + 1, dtype=torch.long)
        arg = {policy._cache_arg: cache}  # the cache argument's name in this transformers, as HFPolicy passes it
        policy.model(input_ids=token, attention_mask=mask, use_cache=True, **arg)  # warm-up step
        start = time.perf_counter()
        for _ in range(steps):
            mask = torch.cat([mask, torch.ones(rows, 1, dtype=torch.long)], 1)
            policy.model(input_ids=token, attention_mask=mask, use_cache=True, **arg)
        return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16, help="concurrent rows (episodes), one batch")
    parser.add_argument("--turns", type=int, default=5, help="turns per row")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens sampled per turn at most (greedy)")
    parser.add_argument("--observation-tokens", type=int, default=200, help="tokens of observation appended after each turn")
    parser.add_argument("--context", type=int, default=800, help="cached tokens per row in the decode-step column")
    parser.add_argument("--note", default="", help="free text kept as \"note\" in the JSON (e.g. other load on the machine)")
    args = parser.parse_args()
    load_start = os.getloadavg()
    policy = HFPolicy.load("embedded", max_batch=args.rows)
    tok = policy.tokenizer
    questions = load_questions(shared_data_dir() / "wiki" / "questions.jsonl")[: args.rows]
    protocol = DeepResearcherProtocol()
    starts = [render.start(tok, protocol, q.question, [WEB_SEARCH_SCHEMA, BROWSE_WEBPAGE_SCHEMA]).ids for q in questions]
    observations = passage_observations(tok, [args.observation_tokens] * args.rows)
    budgets = [[args.max_new_tokens] * args.turns for _ in starts]
    full = HFPolicy(policy.model, tok.hf, max_batch=args.rows, turn_cache_bytes=0)
    reused = HFPolicy(policy.model, tok.hf, max_batch=args.rows)
    each_turn = [[o] * args.turns for o in observations]
    a = asyncio.run(turns(full, starts, each_turn, budgets))
    b = asyncio.run(turns(reused, starts, each_turn, budgets))
    same = sum(x == y for x, y in zip(a.pop("streams"), b.pop("streams")))
    result: dict[str, Any] = {
        "rows": args.rows, "turns": args.turns, "max_new_tokens": args.max_new_tokens,
        "observation_tokens": args.observation_tokens,
        "full_prefill": a, "turn_cache": b, "rows_with_identical_tokens": same,
        "turn_cache_hits": reused._turns.hits, "turn_cache_misses": reused._turns.misses,
        "ratio_turn_cache_vs_full_prefill": a["seconds"] / b["seconds"],
    }
    dynamic = decode_step(policy, args.rows, args.context, growing=False)
    growing = decode_step(policy, args.rows, args.context, growing=True)
    result["decode_step_ms"] = {"context": args.context, "rows": args.rows, "dynamic_cache": dynamic, "growing_layer": growing,
                                "ratio": dynamic / growing}
    result["load_average"] = {"start": load_start, "end": os.getloadavg()}
    if args.note:
        result["note"] = args.note
    out = Path(__file__).parent / "results" / "turns.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
