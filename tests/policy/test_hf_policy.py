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


async def test_a_bf16_load_decodes_batched_rows_in_bf16() -> None:
    """eval_bf16's model: bfloat16 weights through the batched (cascade) decode, log-probs still float."""
    import torch

    from researchrl.policy.hf import HFPolicy

    half = HFPolicy.load("embedded", max_batch=8, bf16=True)
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    greedy = Sampling(temperature=0.0, max_new_tokens=12)
    rows = await asyncio.gather(*(half.generate(c, greedy) for c in contexts(half, QUESTIONS[:2])))
    for row in rows:
        assert 0 < len(row.token_ids) <= 12 and len(row.logprobs) == len(row.token_ids)
        assert all(isinstance(x, float) and math.isfinite(x) and x <= 0 for x in row.logprobs)


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


async def test_finished_rows_leave_the_batch_and_change_nothing_but_work(policy) -> None:  # noqa: ANN001
    """Rows of different budgets: each leaves the decode when done (the batch is compacted), yet every row samples
    what it samples when all rows decode to the last, and its KV, taken at its own batch index, serves its next turn."""
    from researchrl.policy.hf import HFPolicy

    questions = [*QUESTIONS, "Which river flows through Vienna?"]
    budgets = [4, 24, 9, 14]  # the first and third rows finish early: the batch shrinks twice, rows change index
    ctxs = contexts(policy, questions)
    retiring = HFPolicy(policy.model, policy.tokenizer.hf)
    everyone = HFPolicy(policy.model, policy.tokenizer.hf, retire=False, turn_cache_bytes=0)
    a = await asyncio.gather(*(retiring.generate(c, Sampling(temperature=0.0, max_new_tokens=n)) for c, n in zip(ctxs, budgets)))
    b = await asyncio.gather(*(everyone.generate(c, Sampling(temperature=0.0, max_new_tokens=n)) for c, n in zip(ctxs, budgets)))
    assert [len(x.token_ids) for x in b] == budgets and retiring.batch_sizes == {4: 1}
    for x, y in zip(a, b):
        assert x.token_ids == y.token_ids and x.finish_reason == y.finish_reason == "length"
        assert max(abs(p - q) for p, q in zip(x.logprobs, y.logprobs)) < 1e-3
    assert everyone.row_steps == 4 * 23 and retiring.row_steps < 0.7 * everyone.row_steps
    second = [
        Context(c.ids + s.token_ids + policy.tokenizer.hf.encode(f"<|im_start|>user\nNo results for {q}<|im_end|>\n<|im_start|>assistant\n"), c.messages, "")
        for c, s, q in zip(ctxs, a, questions)
    ]
    greedy = Sampling(temperature=0.0, max_new_tokens=12)
    reused = await asyncio.gather(*(retiring.generate(c, greedy) for c in second))
    assert retiring._turns.hits == 4  # every row's KV was kept when it finished
    full = await asyncio.gather(*(everyone.generate(c, greedy) for c in second))
    for x, y in zip(reused, full):
        assert x.token_ids == y.token_ids
        assert max(abs(p - q) for p, q in zip(x.logprobs, y.logprobs)) < 1e-3


async def test_a_tiny_top_p_keeps_only_the_most_likely_token(policy) -> None:  # noqa: ANN001
    ctx = contexts(policy, QUESTIONS[:1])[0]
    greedy = await policy.generate(ctx, Sampling(temperature=0.0, max_new_tokens=12))
    nucleus = await policy.generate(ctx, Sampling(temperature=1.0, top_p=1e-6, max_new_tokens=12, seed=5))
    assert nucleus.token_ids == greedy.token_ids
    free = [await policy.generate(ctx, Sampling(temperature=1.0, max_new_tokens=12, seed=s)) for s in range(4)]
    assert any(f.token_ids != greedy.token_ids for f in free)  # without the cut, sampling does leave the greedy path


async def test_cascade_samples_what_a_prefix_copied_into_every_row_does(policy) -> None:  # noqa: ANN001
    """Two turns of rows sharing the ~700-token system prompt, the second from the turn cache, padded both times."""
    from researchrl.policy.hf import HFPolicy

    cascade = HFPolicy(policy.model, policy.tokenizer.hf)
    copied = HFPolicy(policy.model, policy.tokenizer.hf, cascade=False)
    ctxs = contexts(policy, QUESTIONS)
    budgets = [Sampling(temperature=0.0, max_new_tokens=n) for n in (5, 12, 8)]
    results = []
    for p in (cascade, copied):
        first = await asyncio.gather(*(p.generate(c, b) for c, b in zip(ctxs, budgets)))
        follow = [Context(c.ids + f.token_ids + policy.tokenizer.hf.encode(f"<|im_start|>user\n{'No results. ' * i}<|im_end|>\n<|im_start|>assistant\n"), [], "")
                  for i, (c, f) in enumerate(zip(ctxs, first))]
        results.append(first + await asyncio.gather(*(p.generate(f, Sampling(temperature=0.0, max_new_tokens=8)) for f in follow)))
    assert cascade.cascade and cascade._turns.hits == 3 and cascade._prefix is not None and len(cascade._prefix[0]) > 500
    for a, b in zip(*results):
        assert a.token_ids == b.token_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-3


async def test_a_prefill_grouped_by_length_samples_what_one_padded_prefill_does(policy) -> None:  # noqa: ANN001
    """Second turns whose observations differ tenfold in length: sorted and prefilled in groups of similar widths
    (into views of one cache), the rows sample what one forward padding every row to the longest samples, and their
    KV serves a third turn as well."""
    from researchrl.policy.hf import HFPolicy

    questions = [*QUESTIONS, "Which river flows through Vienna?"]
    lengths = [40, 2, 36, 3]  # sentences of observation per row: requests arrive unsorted
    grouped = HFPolicy(policy.model, policy.tokenizer.hf)
    padded = HFPolicy(policy.model, policy.tokenizer.hf, group_prefill=False)
    greedy = Sampling(temperature=0.0, max_new_tokens=10)
    ctxs = contexts(policy, questions)
    results = []
    for p in (grouped, padded):
        turns = ctxs
        out = []
        for turn in range(3):
            samples = await asyncio.gather(*(p.generate(c, greedy) for c in turns))
            out += samples
            turns = [Context(c.ids + s.token_ids + policy.tokenizer.hf.encode(
                f"<|im_start|>user\n{'The Danube passes Vienna and Budapest. ' * n * (turn + 1)}<|im_end|>\n<|im_start|>assistant\n"), [], "")
                for c, s, n in zip(turns, samples, lengths)]
        results.append(out)
    assert grouped._turns.hits == padded._turns.hits == 8  # turns 2 and 3 fed only their new tokens
    assert grouped.prefill_forwards > padded.prefill_forwards == 3  # the long and the short rows were fed apart
    for a, b in zip(*results):
        assert a.token_ids == b.token_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-3


async def test_episodes_back_from_tools_at_different_times_decode_as_one_batch(policy) -> None:  # noqa: ANN001
    """Four episodes whose tool calls end 0-0.3 s apart take their next turn together, while one that ended (never
    asks again) holds the batch up only `linger` s; with no lingering they split into several decodes."""
    from researchrl.policy.hf import HFPolicy

    greedy = Sampling(temperature=0.0, max_new_tokens=4)
    ctxs = contexts(policy, [*QUESTIONS, "Which river flows through Vienna?"])

    async def episode(p: HFPolicy, ctx: Context, tool_seconds: float | None) -> None:
        first = await p.generate(ctx, greedy)
        if tool_seconds is not None:  # None: the episode answered and ended
            await asyncio.sleep(tool_seconds)
            await p.generate(Context(ctx.ids + first.token_ids + policy.tokenizer.hf.encode("<|im_start|>user\nNo results.<|im_end|>\n<|im_start|>assistant\n"), [], ""), greedy)

    waits = HFPolicy(policy.model, policy.tokenizer.hf, linger=1.0)
    await asyncio.gather(*(episode(waits, c, t) for c, t in zip(ctxs, [0.0, 0.1, 0.2, 0.3])))
    assert waits.batch_sizes == {4: 2}
    ended = HFPolicy(policy.model, policy.tokenizer.hf, linger=0.2)
    await asyncio.gather(*(episode(ended, c, t) for c, t in zip(ctxs, [0.0, 0.1, None, 0.15])))
    assert ended.batch_sizes == {4: 1, 3: 1}
    hasty = HFPolicy(policy.model, policy.tokenizer.hf, linger=0.0)
    await asyncio.gather(*(episode(hasty, c, t) for c, t in zip(ctxs, [0.0, 0.5, 1.0, 1.5])))
    assert sum(hasty.batch_sizes.values()) > 2


def test_prefill_groups_feed_the_fewest_tokens() -> None:
    from researchrl.policy.decode import prefill_groups

    assert prefill_groups([10, 12, 300, 310], cost=128) == [(0, 2), (2, 4)]  # 2*12 + 2*310 + 2*128 < 4*310 + 128
    assert prefill_groups([100, 110, 120], cost=128) == [(0, 3)]  # splitting saves less than a forward costs
    assert prefill_groups([5, 200], cost=0) == [(0, 1), (1, 2)]
    assert prefill_groups([7], cost=128) == [(0, 1)]
    assert prefill_groups([], cost=128) == []


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
