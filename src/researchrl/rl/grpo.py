"""GRPO on TRL's GRPOTrainer with our rollout_func: no RL math of our own (advantages, clipping, KL are TRL's)."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from researchrl.atomic import write_text
from researchrl.errors import ConfigError
from researchrl.policy.vllm_server import VLLMServer
from researchrl.rl import ranks
from researchrl.rl.checkpoints import save_final
from researchrl.rl.config import TrainConfig
from researchrl.rl.rewards import REWARD_FUNCS, REWARD_WEIGHTS
from researchrl.rl.rollout import Rollout
from researchrl.rl.vllm_sync import attach
from researchrl.types import Question


def grpo_args(cfg: TrainConfig, out_dir: Path) -> Any:
    """Our TrainConfig mapped onto GRPOConfig: one optimizer step per generation batch, as in the paper."""
    import torch
    from trl import GRPOConfig

    rollouts = cfg.group_size * cfg.questions_per_step  # per optimizer step, over all processes
    per_pass = cfg.micro_batch * ranks.world_size()  # sequences one forward/backward trains, over all processes
    if rollouts % per_pass:
        raise ConfigError(f"group_size x questions_per_step ({rollouts}) must be a multiple of micro_batch x processes ({per_pass})")
    accumulation = rollouts // per_pass
    return GRPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=cfg.micro_batch,
        gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation,  # the whole generation batch feeds exactly one optimizer step
        num_generations=cfg.group_size,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.01,
        max_grad_norm=1.0,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        temperature=cfg.agent.sampling.temperature,
        loss_type=cfg.loss_type,
        scale_rewards="group",
        reward_weights=REWARD_WEIGHTS,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else "none",
        seed=cfg.agent.seed,
        data_seed=cfg.agent.seed,
        gradient_checkpointing=cfg.gradient_checkpointing,
        bf16=cfg.bf16,
        use_cpu=not torch.cuda.is_available(),
        use_vllm=bool(cfg.use_vllm) and torch.cuda.is_available(),  # TRL's own server client syncs over NCCL; on CPU: vllm_sync
        vllm_mode="server",
        vllm_server_base_url=cfg.vllm_server_base_url if cfg.use_vllm else None,
        disable_dropout=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        log_completions=False,
    )


class MetricsLog(TrainerCallback):
    """A TrainerCallback writing one JSON line per optimizer step: TRL's logs, our phase timings and web spend.

    When the run's spend cap is reached, the step that reached it finishes, is checkpointed, and training stops.
    Under several processes every one decides the same (the rollout's stats and budget state cover them all) and
    only world process zero writes metrics.jsonl and ledger.json.
    """

    def __init__(self, path: Path, rollout: Rollout):
        self.path = path
        self.rollout = rollout
        self.step_started = 0.0
        self.budget_stop_step: int | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        """Save the run's ledger beside the metrics; checkpoint and stop once the run budget is spent."""
        if state.is_world_process_zero:
            write_text(self.path.parent / "ledger.json", self.rollout.ledger_json())
        if self.rollout.run_exhausted:
            control.should_save = True
            control.should_training_stop = True
            self.budget_stop_step = state.global_step

    def on_step_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        """Start the step clock (generation happens inside the step)."""
        self.step_started = time.perf_counter()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
        """Append the step's metrics with seconds per phase, tool calls by type and rollout tokens per second."""
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        step_seconds = time.perf_counter() - self.step_started
        generation = self.rollout.last_seconds
        row = {"step": state.global_step, **logs}
        row["seconds/step"] = step_seconds
        row["seconds/rollout"] = generation
        row["seconds/update"] = max(0.0, step_seconds - generation)
        row.update(self.rollout.last_stats)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def run_grpo(
    model_path: str, questions: list[Question], rollout: Rollout, cfg: TrainConfig, out_dir: Path, metrics: Path,
    resume: str | bool | None = None, server: VLLMServer | None = None,
) -> Path:
    """Train; checkpoints land in out_dir/checkpoint-N, the final model in out_dir/model (whole once there); `server`: a managed vLLM."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from researchrl.rl.train import BudgetStop

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if cfg.bf16 else torch.float32)
    log = MetricsLog(metrics, rollout)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=REWARD_FUNCS,
        args=grpo_args(cfg, out_dir),
        train_dataset=Dataset.from_list([{"prompt": q.question} for q in questions]),
        processing_class=tokenizer,
        rollout_func=rollout,
        callbacks=[log],
    )
    if rollout.vllm is not None:
        attach(trainer, rollout.vllm, server, cfg.vllm_sync_tolerance)
    trainer.train(resume_from_checkpoint=resume)
    if log.budget_stop_step is not None:
        spent = sum(row["cost"] for row in json.loads(rollout.ledger_json())["run"])  # every process's spend
        cap = cfg.env.run_budget_usd if cfg.env.run_budget_usd is not None else rollout.env.tools.ledger.run_budget
        raise BudgetStop(
            f"run budget ${cap} reached at step {log.budget_stop_step} (spent ${spent:.4f}); "
            f"checkpoint saved in {out_dir}/checkpoint-{log.budget_stop_step}. To go on, resume with a larger cap: "
            f"researchrl train --resume {metrics.parent} --set env.run_budget_usd=<more>"
        )
    save_final(trainer, tokenizer, out_dir / "model")
    return out_dir / "model"
