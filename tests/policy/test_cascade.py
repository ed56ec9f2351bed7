"""Cascade attention (policy/cascade.py): the shared prefix attended apart from each row's own tokens gives the same
logits as one forward over prefix and row, with left padding, a prefill and a decode step (HFPolicy with and without
it: tests/policy/test_hf_policy.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def tiny(tiny_llama: Path):  # noqa: ANN201
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-4), ("bfloat16", 0.05)])
def test_cascade_equals_one_forward_over_prefix_and_rows(tiny, dtype: str, tolerance: float) -> None:  # noqa: ANN001
    import copy

    import torch
    from transformers import DynamicCache

    from researchrl.policy.cascade import cascading

    model = tiny[0] if dtype == "float32" else copy.deepcopy(tiny[0]).to(torch.bfloat16)  # eval_bf16's copy
    prefix = torch.randint(10, 1000, (1, 9))
    rows = torch.randint(10, 1000, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[0, :2] = mask[2, :1] = 0  # left padding of different widths
    step = torch.randint(10, 1000, (3, 1))
    full_mask = torch.cat([torch.ones(3, 9, dtype=torch.long), mask, torch.ones(3, 1, dtype=torch.long)], 1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        whole = model(input_ids=torch.cat([prefix.expand(3, -1), rows, step], 1), attention_mask=full_mask, position_ids=positions).logits
        shared = model(input_ids=prefix, use_cache=True).cache
        own = DynamicCache()
        with cascading(model):
            assert model.config._attn_implementation == "researchrl_cascade"
            first = model(input_ids=rows, attention_mask=mask, position_ids=positions[:, 9:15], cache=own,
                          use_cache=True, cascade_prefix=shared).logits
            second = model(input_ids=step, attention_mask=full_mask[:, 9:], position_ids=positions[:, 15:], cache=own,
                           use_cache=True, cascade_prefix=shared).logits
        assert model.config._attn_implementation == "sdpa"  # restored after the block
    real = mask.bool()
    assert first.dtype == second.dtype == getattr(torch, dtype)  # the merge's fp32 log-sum-exps do not leak into the model
    assert (first - whole[:, 9:15])[real].abs().max() < tolerance  # padding positions are not compared: nothing reads them
    assert (second - whole[:, 15:]).abs().max() < tolerance
    assert own.get_seq_length() == 7  # the rows' cache holds only their own tokens, not the prefix


def test_cascading_restores_the_attention_after_an_error(tiny) -> None:  # noqa: ANN001
    from researchrl.policy.cascade import cascading

    model, _ = tiny
    with pytest.raises(RuntimeError), cascading(model):
        raise RuntimeError("a decode failed")
    assert model.config._attn_implementation == "sdpa"


def test_cascade_is_used_only_where_it_reproduces_the_attention(tiny) -> None:  # noqa: ANN001
    import torch
    from transformers import Gemma2Config, Qwen2Config

    from researchrl.policy.cascade import fits

    model, _ = tiny
    assert fits(model)
    cpu = torch.device("cpu")
    assert fits(SimpleNamespace(device=cpu, config=Qwen2Config()))
    assert not fits(SimpleNamespace(device=cpu, config=Qwen2Config(use_sliding_window=True)))  # a window it ignores
    assert not fits(SimpleNamespace(device=cpu, config=Gemma2Config()))  # soft-capped logits
    assert not fits(SimpleNamespace(device=torch.device("cuda"), config=model.config))  # its kernel is CPU-only


def test_overlapping_decodes_on_one_model_restore_its_attention_when_the_last_leaves(tiny) -> None:  # noqa: ANN001
    from researchrl.policy.cascade import NAME, cascading

    model, _ = tiny
    first, second = cascading(model), cascading(model)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert model.config._attn_implementation == NAME  # the second decode is still running
    second.__exit__(None, None, None)
    assert model.config._attn_implementation == "sdpa"
