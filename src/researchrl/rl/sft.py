"""Warm-up: supervised fine-tuning on expert trajectories with TRL's SFTTrainer, loss on policy tokens only.

The labels are built from the same loss mask the RL step uses (`render.Transcript`): tokens the policy would
have sampled keep their id, everything else (prompt, prefills, observations) is -100.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from researchrl.data.rows import jsonl_rows
from researchrl.errors import UserError
from researchrl.rl.checkpoints import save_final
from researchrl.rl.config import checkpointing_flag
from researchrl.types import Trajectory


def sft_rows(trajectories: list[Trajectory]) -> list[dict[str, list[int]]]:
    """input_ids and labels per trajectory; observation and prompt tokens never carry a label."""
    rows = []
    for t in trajectories:
        ids = t.prompt_ids + t.completion_ids
        mask = [0] * len(t.prompt_ids) + t.mask
        rows.append({"input_ids": ids, "labels": [i if m else -100 for i, m in zip(ids, mask)]})
    return rows


def write_rows(rows: list[dict[str, list[int]]], path: Path) -> None:
    """Keep the warm-up data beside the run (JSONL of token ids and labels)."""
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_rows(path: Path) -> list[dict[str, list[int]]]:
    """Token rows written by `write_rows` (or any JSONL with input_ids + labels); a bad file or line is a UserError."""
    rows = []
    for where, row in jsonl_rows(Path(path), "{path}:{line}"):
        ids = row.get("input_ids") if isinstance(row, dict) else None
        if not isinstance(ids, list) or not isinstance(row.get("labels"), list) or len(row["labels"]) != len(ids):
            raise UserError(f"{where}: needs input_ids and labels of equal length")
        rows.append(row)
    return rows


def warm_up(
    model_path: str,
    rows: list[dict[str, list[int]]],
    out_dir: Path,
    epochs: float,
    learning_rate: float,
    micro_batch: int = 2,
    seed: int = 0,
    gradient_checkpointing: bool = False,
    amp: bool = False,
    fused_lm_head: bool = True,
) -> tuple[Path, list[dict[str, Any]]]:
    """Fine-tune `model_path` on `rows` (`amp`: bf16 autocast, fp32 weights; `fused_lm_head`: TRL's loss, else the
    model's own head, rl/lm_head.py); returns the saved model (out_dir/model, whole once there) and the log history."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from researchrl.rl.lm_head import plain_head_fits
    from researchrl.rl.sft_trainer import PlainHeadSFTTrainer

    if not rows:
        raise UserError("the warm-up has no demonstrations (the expert found no grounded answers)")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(out_dir / "trainer"),
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=1,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        **checkpointing_flag(gradient_checkpointing),
        bf16=amp,  # over fp32 weights: transformers autocasts the forward (accelerate's mixed precision)
        max_length=None,
        use_cpu=not torch.cuda.is_available(),
        dataset_num_proc=None,
    )
    trainer_class = SFTTrainer if fused_lm_head or not plain_head_fits(model) else PlainHeadSFTTrainer
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()
    save_final(trainer, tokenizer, out_dir / "model", {"log_history.json": json.dumps(trainer.state.log_history, indent=1)})
    return out_dir / "model", trainer.state.log_history
