"""The local transformers policy on the real embedded SmolLM2: batching changes nothing but speed."""

from __future__ import annotations

import asyncio
import math

import pytest

from researchrl.agent import render
from researchrl.agent.protocols.deepresearcher import DeepResearcherProtocol
from researchrl.agent.protocols.search_r1 import SearchR1Protocol
from researchrl.policy.base import Context, Sampling
from researchrl.prompts import BROWSE_WEBPAGE_SCHEMA, WEB_SEARCH_SCHEMA

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def policy():  # noqa: ANN201
    pytest.importorskip("torch")
    from researchrl.policy.hf import HFPolicy

    return HFPolicy.load("embedded", max_batch=8)


def contexts(policy, questions: list[str], protocol=None) -> list[Context]:  # noqa: ANN001
    protocol = protocol or DeepResearcherProtocol(date="2026-11-22")
    out = []
    for q in questions:
        t = render.start(policy.tokenizer, protocol, q, [WEB_SEARCH_SCHEMA, BROWSE_WEBPAGE_SCHEMA])
        out.append(Context(t.ids, t.messages, protocol.prefill))
    return out


QUESTIONS = ["If Gallu is a demon Lilu is what?", "Who wrote Hamlet?", "What is the capital of France and why?"]


async def test_batched_greedy_equals_one_at_a_time(policy) -> None:  # noqa: ANN001
    greedy = Sampling(temperature=0.0, max_new_tokens=24)
    ctxs = contexts(policy, QUESTIONS)
    batched = await asyncio.gather(*(policy.generate(c, greedy) for c in ctxs))
    single = [await policy.generate(c, greedy) for c in ctxs]
    for b, s in zip(batched, single):
        assert b.token_ids == s.token_ids
        assert b.finish_reason in ("eos", "length") and len(b.token_ids) <= 24
        assert len(b.logprobs) == len(b.token_ids)
        assert all(math.isfinite(x) and x <= 0 for x in b.logprobs)
        for x, y in zip(b.logprobs, s.logprobs):
            assert abs(x - y) < 1e-3  # padding changes float sums only slightly


async def test_logprobs_match_a_forward_pass(policy) -> None:  # noqa: ANN001
    import torch

    ctx = contexts(policy, QUESTIONS[:1])[0]
    sample = await policy.generate(ctx, Sampling(temperature=1.0, max_new_tokens=16, seed=3))
    ids = torch.tensor([ctx.ids + sample.token_ids])
    with torch.inference_mode():
        logits = policy.model(ids).logits[0, len(ctx.ids) - 1 : -1]
    expected = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(sample.token_ids).view(-1, 1)).squeeze(1)
    assert torch.allclose(torch.tensor(sample.logprobs), expected, atol=1e-3)


async def test_seeded_sampling_is_reproducible(policy) -> None:  # noqa: ANN001
    ctx = contexts(policy, QUESTIONS[:1])[0]
    s = Sampling(temperature=1.0, max_new_tokens=16, seed=42)
    assert (await policy.generate(ctx, s)).token_ids == (await policy.generate(ctx, s)).token_ids


async def test_per_request_budget_and_stop_strings_cut_each_row(policy) -> None:  # noqa: ANN001
    ctxs = contexts(policy, QUESTIONS[:2], SearchR1Protocol())
    short, long_ = await asyncio.gather(
        policy.generate(ctxs[0], Sampling(temperature=0.0, max_new_tokens=5)),
        policy.generate(ctxs[1], Sampling(temperature=0.0, max_new_tokens=40, stop=("</search>", "."))),
    )
    assert len(short.token_ids) <= 5
    assert long_.finish_reason in ("stop", "eos", "length")
    if long_.finish_reason == "stop":
        assert long_.text.endswith((".", "</search>")) or "." in long_.text[-8:]


async def test_shared_prefix_cache_changes_nothing_but_speed(policy) -> None:  # noqa: ANN001
    from researchrl.policy.hf import HFPolicy

    greedy = Sampling(temperature=0.0, max_new_tokens=16)
    ctxs = contexts(policy, QUESTIONS)
    cached = HFPolicy(policy.model, policy.tokenizer.hf)
    plain = HFPolicy(policy.model, policy.tokenizer.hf, prefix_cache=False)
    with_cache = await asyncio.gather(*(cached.generate(c, greedy) for c in ctxs))
    assert cached._prefix is not None and len(cached._prefix[0]) > 500  # the system prompt + tools were cached
    without = await asyncio.gather(*(plain.generate(c, greedy) for c in ctxs))
    for a, b in zip(with_cache, without):
        assert a.token_ids == b.token_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-3


async def test_next_turn_from_the_turn_cache_equals_a_full_prefill(policy) -> None:  # noqa: ANN001
    """Turn 2 fed only its new tokens (rows of different cached and new lengths) samples what a full prefill does."""
    from researchrl.policy.hf import HFPolicy

    greedy = Sampling(temperature=0.0, max_new_tokens=20)
    reused = HFPolicy(policy.model, policy.tokenizer.hf)
    full = HFPolicy(policy.model, policy.tokenizer.hf, turn_cache_bytes=0)
    ctxs = contexts(policy, QUESTIONS)
    first = await asyncio.gather(*(reused.generate(c, greedy) for c in ctxs))
    assert reused._turns.misses == 3 and len(reused._turns.rows) == 3
    observations = ["Lilu is a male demon.", "Hamlet was written by William Shakespeare around 1600, in London.", "Paris"]
    second = [
        Context(c.ids + s.token_ids + policy.tokenizer.hf.encode(f"<|im_start|>user\n{o}<|im_end|>\n<|im_start|>assistant\n"), c.messages, "")
        for c, s, o in zip(ctxs, first, observations)
    ]
    a = await asyncio.gather(*(reused.generate(c, greedy) for c in second))
    assert reused._turns.hits == 3  # every row found its first turn
    b = await asyncio.gather(*(full.generate(c, greedy) for c in second))
    for x, y in zip(a, b):
        assert x.token_ids == y.token_ids
        assert max(abs(p - q) for p, q in zip(x.logprobs, y.logprobs)) < 1e-3


def test_turn_cache_is_bounded_and_takes_the_longest_prefix() -> None:
    torch = pytest.importorskip("torch")
    from researchrl.policy.kvcache import RowKV, TurnCache

    def row(tokens: tuple[int, ...]) -> RowKV:
        return RowKV(tokens, [(torch.zeros(1, len(tokens), 2), torch.zeros(1, len(tokens), 2))])

    cache = TurnCache(max_bytes=row((0,) * 10).nbytes * 2)  # room for 20 tokens' KV
    cache.put(row((1, 2)))
    cache.put(row((1, 2, 3, 4)))
    assert cache.take([9, 2, 3, 4, 5]) is None and cache.misses == 1
    got = cache.take([1, 2, 3, 4, 5])
    assert got is not None and got.tokens == (1, 2, 3, 4) and (1, 2, 3, 4) not in cache.rows
    cache.put(row((1, 2, 3, 4)))
    got = cache.take([1, 2, 3, 4])  # a row needs at least one token left to feed: the shorter one is taken
    assert got is not None and got.tokens == (1, 2) and list(cache.rows) == [(1, 2, 3, 4)]
    cache.put(got)
    cache.put(row((7,) * 15))  # 4 + 2 + 15 tokens is over the bound: the least recently stored row goes
    assert list(cache.rows) == [(1, 2), (7,) * 15] and cache.bytes == row((7,) * 17).nbytes
    cache.put(row((8,) * 30))  # a row larger than the bound is not kept
    assert list(cache.rows) == [(1, 2), (7,) * 15]


def test_growing_layer_holds_what_concatenation_would_past_its_room() -> None:
    torch = pytest.importorskip("torch")
    from transformers.cache_utils import DynamicLayer

    from researchrl.policy.kvcache import GrowingLayer

    grown, reference = GrowingLayer(room=1), DynamicLayer()
    for n in (3, 1, 2, 1):  # the third update is past the buffer's room: it must grow, keeping what it held
        k, v = torch.randn(2, 3, n, 4), torch.randn(2, 3, n, 4)
        got, want = grown.update(k, v), reference.update(k, v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert grown.get_seq_length() == 7
