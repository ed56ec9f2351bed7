"""The own-head scoring path (rl/lm_head.py) through a DDP wrapper, as multi-process training calls it (tiny Llama)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.model


def test_scored_logits_run_through_a_ddp_wrapper_and_leave_generation_alone(tmp_path, tiny_llama) -> None:  # noqa: ANN001
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from transformers import AutoModelForCausalLM

    from researchrl.rl.lm_head import scored_logits

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    torch.manual_seed(0)
    ids = torch.randint(5, 1000, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # a left-padded row
    expected = model(input_ids=ids, attention_mask=mask).logits[:, -5:-1].float()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(model)
        logits = scored_logits(wrapped, ids, mask, 4)
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
        logits.logsumexp(-1).sum().backward()  # the wrapper's forward ran: its reducer takes the gradients
        assert all(p.grad is not None for p in model.parameters())
        logits_again = scored_logits(wrapped, ids, mask, 4)  # patched once, not wrapped twice
        torch.testing.assert_close(logits_again, logits)
    finally:
        dist.destroy_process_group()
    plain = model(input_ids=ids, attention_mask=mask)  # without scored_positions: the original forward, all positions
    assert plain.logits.shape == (2, 9, model.config.vocab_size)
    assert model.generate(ids[:1], max_new_tokens=2, do_sample=False).shape == (1, 11)
