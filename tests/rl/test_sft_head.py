"""The warm-up's own-head loss (PlainHeadSFTTrainer) is TRL's SFT loss: same value, same gradient (tiny Llama)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.model


def test_the_own_head_loss_and_gradient_equal_trls_sft_loss(tmp_path, tiny_llama) -> None:  # noqa: ANN001
    pytest.importorskip("trl")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from researchrl.rl.sft_trainer import PlainHeadSFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    torch.manual_seed(0)
    # two demonstrations of different lengths: a prompt (-100), sampled tokens, an observation (-100), sampled tokens
    rows = []
    for prompt, first, observation, last in ((7, 4, 5, 3), (3, 6, 2, 5)):
        ids = torch.randint(5, 1000, (prompt + first + observation + last,)).tolist()
        labels = [-100] * prompt + ids[prompt : prompt + first] + [-100] * observation + ids[prompt + first + observation :]
        rows.append({"input_ids": ids, "labels": labels})
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, use_cpu=True, report_to="none",
                     bf16=False, max_length=None)
    losses, grads = [], []
    for trainer_class in (SFTTrainer, PlainHeadSFTTrainer):
        trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        batch = next(iter(trainer.get_train_dataloader()))
        assert batch["input_ids"].shape == (2, 19)  # right-padded to the longer row
        labelled = int((batch["labels"] != -100).sum())
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(labelled))
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        model.zero_grad()
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
    assert losses[0] > 0 and grads[0].abs().sum() > 0
