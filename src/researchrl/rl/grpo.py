"""GRPO on TRL's GRPOTrainer with our rollout_func: no RL math of our own (advantages, clipping, KL are TRL's).

LeanGRPOTrainer computes what TRL computes in less memory; bench/train_step.py measured each change (cpu preset, G = 8,
~1.2k-token trajectories, two steps: peak RSS 6.1 GB before, 3.4 GB after, the update 82 s before, 63 s after):
- TRL's fused LM head projects `logprob_chunk` vocabulary rows at a time: its 32768 (of SmolLM2's 49152) left ~2 GB
  of fp32 temporaries per 1.5k-token sequence on CPU, where it has no Triton kernel (-0.9 GB; the head 2.5x faster);
  with `fused_lm_head` off (the default on CPU) the model's own head scores the completion positions instead
  (rl/lm_head.py);
- each forward (policy, reference) is cut to the columns its micro-batch uses: TRL pads a whole generation batch to
  its longest prompt plus its longest completion, so a short trajectory was scored at the longest one's length;
- with `reload_reference` the KL reference model holds its weights only for its one pass per step (-0.66 GB);
- the prompt prefix the rows share (system prompt, tool schemas) runs once per pass, not once per row
  (rl/shared_prefix.py; on the model's own head, one row per micro-batch);
- freed C-heap pages go back to the OS between rollout, reference pass and micro-batches (-1.0 GB, see
  release_free_memory);
- with no KL term (beta = 0), a micro-batch whose rows all have zero advantage (a group whose rollouts all scored the
  same) has zero loss and gradient whatever the weights: it skips its forward and backward (`zero_loss`).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from trl import GRPOTrainer

from researchrl.atomic import write_text
from researchrl.errors import ConfigError
from researchrl.policy.vllm_server import VLLMServer
from researchrl.rl import ranks
from researchrl.rl.checkpoints import save_final
from researchrl.rl.config import TrainConfig, checkpointing_flag
from researchrl.rl.lm_head import plain_head_fits, resolve_lm_head, scored_logits
from researchrl.rl.precision import autocast, resolve_amp
from researchrl.rl.rewards import REWARD_FUNCS, REWARD_WEIGHTS
from researchrl.rl.rollout import Rollout
from researchrl.rl.shared_prefix import SharedPrefix, common_length
from researchrl.rl.shared_prefix import fits as prefix_fits
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
        **checkpointing_flag(cfg.gradient_checkpointing),
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


class LeanGRPOTrainer(GRPOTrainer):
    """GRPOTrainer computing the same in less memory: forwards skip the padding columns no row of the micro-batch uses
    (text models only); with `reference_path` the KL reference model holds its weights only for its pass; freed heap
    pages are returned after the rollout, the reference pass and each micro-batch."""

    reference_path: str | None = None  # reload the reference weights from here for each reference pass
    amp = False  # score (policy and reference forwards, and so their backward) under bf16 autocast
    fused_head = True  # TRL's fused LM head; False: the model's own over the completion positions (rl/lm_head.py)
    share_prefix = True  # run the rows' shared prompt prefix once per pass (own head, one row per micro-batch)
    skip_zero_advantage = True  # no forward or backward for a micro-batch whose loss is zero whatever the weights
    _loss_pass = False  # inside _compute_loss: the policy's prefix is kept for the whole optimizer step
    _step_prefix: SharedPrefix | None = None  # the policy's prefix of this optimizer step, its gradient still to send

    def _generate(self, prompts: list[Any]) -> Any:
        """TRL's generation (our rollout_func); the memory it freed then goes back to the OS before the update."""
        try:
            return super()._generate(prompts)
        finally:
            release_free_memory()

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        """One micro-batch's forward and backward (at the step's last, the shared prefix's backward too); the memory it
        freed then goes back to the OS."""
        try:
            loss = super().training_step(*args, **kwargs)
            if self.accelerator.sync_gradients:  # before the clip and the step
                self.send_prefix_gradient()
            return loss
        finally:
            if self.accelerator.sync_gradients:
                self._step_prefix = None
            release_free_memory()

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Any:
        """TRL's loss; the policy's scoring inside it may keep a shared prefix for the optimizer step. A micro-batch
        whose loss is zero whatever the weights (`zero_loss`) skips its forward and backward."""
        zero = self.zero_loss(inputs)
        if self.model.training:
            self._metrics["train"]["frac_micro_batches_skipped"].append(float(zero))
        if zero:  # zero gradients, not none: AdamW still decays its moments and steps on them, as TRL's pass would
            return sum(param.sum() * 0.0 for param in model.parameters() if param.requires_grad)
        with self.loss_pass():
            return super()._compute_loss(model, inputs)

    def zero_loss(self, inputs: dict[str, Any]) -> bool:
        """Every row's advantage is zero and nothing else enters the loss (no KL term, entropy bonus or MoE aux
        loss): every loss type scales each token by its advantage, so the loss and its gradient are exactly zero.
        One process only (TRL gathers metrics across processes inside the loss)."""
        return (self.skip_zero_advantage and self.model.training and self.beta == 0.0 and not self.aux_loss_enabled
                and not self._entropy_bonus_enabled and self.accelerator.num_processes == 1
                and not bool(inputs["advantages"].any()))

    @contextmanager
    def loss_pass(self) -> Iterator[None]:
        """The policy's scoring while inside is a loss pass: its shared prefix is kept until `send_prefix_gradient`."""
        self._loss_pass = True
        try:
            yield
        finally:
            self._loss_pass = False

    def send_prefix_gradient(self) -> None:
        """The gradient the step's rows gathered for their shared prefix goes into the weights; the prefix is dropped."""
        if self._step_prefix is not None:
            self._step_prefix.backward()
            self._step_prefix = None

    def release_reference(self) -> None:
        """Free the reference model's weights until its next pass reloads them from `reference_path`."""
        import torch

        for param in self.ref_model.parameters():
            param.data = torch.empty(0, dtype=param.dtype)

    @contextmanager
    def reference_loaded(self) -> Iterator[None]:
        """The reference weights, read again from `reference_path`, in the reference model while inside."""
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        dtype = next(self.ref_model.parameters()).dtype
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # not a "Loading weights" bar every step
        try:
            weights = dict(AutoModelForCausalLM.from_pretrained(self.reference_path, dtype=dtype).named_parameters())
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        for name, param in self.ref_model.named_parameters():  # tied weights are one parameter, set once
            param.data = weights.pop(name).data
        if weights:
            raise RuntimeError(f"reference model lacks {sorted(weights)[:3]} of {self.reference_path}")
        try:
            yield
        finally:
            self.release_reference()
            release_free_memory()

    def _get_per_token_logps_and_entropies(  # type: ignore[override]
        self, model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int, batch_size: int | None = None,
        compute_entropy: bool = False, compute_aux_loss: bool = False, **multimodal: Any,
    ) -> tuple[Any, Any, Any]:
        """TRL's per-token log-probs (and entropies), the reference weights loaded for the reference pass."""
        reference = self.reference_loaded() if model is self.ref_model and self.reference_path is not None else nullcontext()
        with reference, autocast(self.amp, input_ids.device.type):
            return self._trimmed_logps(model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy,
                                       compute_aux_loss, **multimodal)

    def _trimmed_logps(
        self, model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int, batch_size: int | None,
        compute_entropy: bool, compute_aux_loss: bool, **multimodal: Any,
    ) -> tuple[Any, Any, Any]:
        """Each micro-batch cut to its used columns (prompts are left-padded, completions right-padded), scored by TRL,
        its log-probs and entropies padded back to the batch's width with zeros where the completion mask is 0."""
        import torch
        import torch.nn.functional as F

        score = super()._get_per_token_logps_and_entropies
        if any(value is not None for value in multimodal.values()):  # image inputs are indexed by row: TRL's own path
            return score(model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy,
                         compute_aux_loss, **multimodal)
        # MoE aux losses come from TRL's head; `model` may be DDP-wrapped
        if not (self.fused_head or compute_aux_loss) and plain_head_fits(self.accelerator.unwrap_model(model)):
            score = self._plain_scores
        batch_size = batch_size or input_ids.size(0)
        prompt_width = input_ids.size(1) - logits_to_keep
        prefix = self._shared_prefix(model, input_ids, attention_mask, prompt_width) if (
            score == self._plain_scores and batch_size == 1) else None
        logps, entropies, aux_losses = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            mask = attention_mask[start : start + batch_size]
            used = mask.any(dim=0).nonzero().flatten()
            left = min(int(used[0]), prompt_width - 1)  # the last prompt position scores the first completion token
            right = max(int(used[-1]) + 1, prompt_width + 1)
            keep = right - prompt_width
            ids = input_ids[start : start + batch_size, left:right]
            extra = {"prefix": prefix} if prefix is not None and bool(mask[:, left:right].all()) else {}
            lp, entropy, aux = score(model, ids, mask[:, left:right], keep, compute_entropy=compute_entropy,
                                     compute_aux_loss=compute_aux_loss, **extra)
            logps.append(F.pad(lp, (0, logits_to_keep - keep)))
            if compute_entropy:
                entropies.append(F.pad(entropy, (0, logits_to_keep - keep)))
            if compute_aux_loss:
                aux_losses.append(aux)
        return (torch.cat(logps), torch.cat(entropies) if compute_entropy else None,
                torch.stack(aux_losses).mean() if compute_aux_loss else None)

    def _shared_prefix(self, model: Any, input_ids: Any, attention_mask: Any, prompt_width: int) -> SharedPrefix | None:
        """The prefix this pass's rows share: with gradients (the loss pass, one process, no activation checkpointing)
        the step's, computed from its first row and kept until the step's backward; else the longest one all rows
        of this call start with, computed now."""
        import torch

        base = self.accelerator.unwrap_model(model)
        if not (self.share_prefix and prefix_fits(base)):
            return None
        grad = torch.is_grad_enabled()
        if grad and not (self._loss_pass and self.accelerator.num_processes == 1 and not self.args.gradient_checkpointing):
            return None
        if grad and self._step_prefix is not None:
            return self._step_prefix
        rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids, attention_mask)]
        most = min(int(m[:prompt_width].sum()) for m in attention_mask) - 1  # the last prompt token runs with its row
        if grad:
            self._step_prefix = SharedPrefix.compute(base, rows[0][:most]) if most > 0 else None
            return self._step_prefix
        length = min(common_length(rows), most)
        return SharedPrefix.compute(base, rows[0][:length]) if len(rows) > 1 and length > 0 else None

    def _plain_scores(
        self, model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int, compute_entropy: bool = False,
        compute_aux_loss: bool = False, prefix: SharedPrefix | None = None,
    ) -> tuple[Any, Any, None]:
        """TRL's log-probs (and entropies) of the last `logits_to_keep` tokens, from the model's own head in fp32;
        `prefix`: keys and values of the first tokens of an unpadded single row, which then runs only its rest."""
        from trl.trainer.utils import selective_log_softmax, selective_log_softmax_and_entropy

        row = input_ids[0].tolist() if prefix is not None else []
        shared = prefix.shared_with(row, len(row) - logits_to_keep - 1) if prefix is not None else 0
        if shared:
            logits = prefix.scored_logits(model, row, shared, logits_to_keep)
        else:
            logits = scored_logits(model, input_ids, attention_mask, logits_to_keep)
        tokens, scored = input_ids[:, -logits_to_keep:], attention_mask[:, -logits_to_keep:]
        if compute_entropy:
            logps, entropy = selective_log_softmax_and_entropy(logits, tokens, temperature=self.temperature, row_mask=scored)
            return logps, entropy, None
        return selective_log_softmax(logits, tokens, temperature=self.temperature, row_mask=scored), None, None


def release_free_memory() -> None:
    """Return the C heap's free pages to the OS (glibc's malloc_trim; other C libraries have none: nothing to do).

    glibc keeps freed blocks below its mmap threshold (raised up to 32 MB as big blocks are freed, so most tensors
    fall below it) resident in per-thread arenas: 1.6 GB of the 4.45 GB peak was free heap (the rollout's KV caches
    from its worker thread, earlier micro-batches' activations). A fixed 1 MB threshold (MALLOC_MMAP_THRESHOLD_) got
    the peak lower still but made rollouts 50 % and updates 40 % slower (a page fault per fresh tensor); one trim
    between phases costs nothing measurable.
    """
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


@contextmanager
def logprob_chunk(columns: int | None) -> Iterator[None]:
    """TRL's fused LM head projects `columns` vocabulary rows at a time while inside (None: TRL's own size)."""
    import trl.trainer.utils as trl_utils

    if not hasattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE"):  # pyproject pins trl <1.17: a newer one, re-check
        raise RuntimeError("this TRL has no _CHUNKED_LOGPROB_CHUNK_SIZE: logprob_chunk cannot be applied")
    previous = trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE
    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = columns or previous
    try:
        yield
    finally:
        trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = previous


def run_grpo(
    model_path: str, questions: list[Question], rollout: Rollout, cfg: TrainConfig, out_dir: Path, metrics: Path,
    resume: str | bool | None = None, server: VLLMServer | None = None,
) -> Path:
    """Train; checkpoints land in out_dir/checkpoint-N, the final model in out_dir/model (whole once there); `server`: a managed vLLM."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from researchrl.rl.train import BudgetStop

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if cfg.bf16 else torch.float32)
    log = MetricsLog(metrics, rollout)
    trainer = LeanGRPOTrainer(
        model=model,
        reward_funcs=REWARD_FUNCS,
        args=grpo_args(cfg, out_dir),
        train_dataset=Dataset.from_list([{"prompt": q.question} for q in questions]),
        processing_class=tokenizer,
        rollout_func=rollout,
        callbacks=[log],
    )
    if cfg.reload_reference and trainer.ref_model is not None:  # TRL built it from model_path too
        if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
            raise ConfigError("reload_reference needs the whole reference model in each process: not DeepSpeed or FSDP")
        trainer.reference_path = model_path
        trainer.release_reference()
    trainer.amp = bool(resolve_amp(cfg).amp)  # Run resolved both already; direct callers get the same rules
    trainer.fused_head = bool(resolve_lm_head(cfg).fused_lm_head)
    if rollout.vllm is not None:
        attach(trainer, rollout.vllm, server, cfg.vllm_sync_tolerance)
    with logprob_chunk(cfg.logprob_chunk):
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
