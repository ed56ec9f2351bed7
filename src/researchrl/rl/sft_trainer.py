"""TRL's SFTTrainer with the loss from the model's own LM head over the labelled positions (rl/lm_head.py: faster on CPU)."""

from __future__ import annotations

from typing import Any

from trl import SFTTrainer

from researchrl.rl.lm_head import scored_logits


class PlainHeadSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss is the mean negative log-likelihood of the labelled tokens (TRL's `nll`), its logits
    computed from the first labelled column on; TRL's entropy and token-accuracy metrics are not logged."""

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """Token-summed cross-entropy over `num_items_in_batch` labelled tokens (this micro-batch's when None)."""
        import torch
        import torch.nn.functional as F

        labels = inputs["labels"]
        labelled = (labels != -100).any(dim=0).nonzero().flatten()
        keep = labels.size(1) - max(int(labelled[0]) if len(labelled) else labels.size(1) - 1, 1)
        with self.accelerator.autocast():  # the scored path bypasses the forward accelerate wrapped in its autocast
            logits = scored_logits(model, inputs["input_ids"], inputs.get("attention_mask"), keep)
        targets = labels[:, -keep:]
        total = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
        count = (targets != -100).sum() if num_items_in_batch is None else num_items_in_batch
        loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
        return (loss, {"logits": logits}) if return_outputs else loss
