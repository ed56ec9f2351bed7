"""`researchrl train`: evaluate the base model, warm it up on expert trajectories, train with GRPO, evaluate again.

A run directory holds everything: config.toml (resolved; `--resume` and `eval --run` reload it), sft/ (warm-up
data and model), grpo/ (TRL checkpoints, final model), trajectories.jsonl (every GRPO rollout), metrics.jsonl
(every step), eval.json (held-out results before / after the warm-up / after GRPO), eval_<phase>.jsonl (held-out
trajectories), curves.png. A run stopped
at any point resumes with `--resume RUN_DIR`: finished phases are skipped, GRPO continues from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from researchrl.data.load import load_questions
from researchrl.environment import EnvConfig, RunningEnvironment
from researchrl.errors import ConfigError, UserError
from researchrl.eval.runner import evaluate
from researchrl.records import write_records
from researchrl.rl.config import TrainConfig
from researchrl.types import Question

PHASES = ("before", "after_sft", "after")


class BudgetStop(UserError):
    """The run's spend cap was reached: the last step finished and was checkpointed; resuming needs a larger cap."""


def env_config(cfg: TrainConfig, run_dir: Path | None = None) -> EnvConfig:
    """The run's environment; with `run_dir`, spend is counted on from the run's ledger.json (a resumed run keeps its budget)."""
    return cfg.env if run_dir is None else dataclasses.replace(cfg.env, ledger_path=run_dir / "ledger.json")


def split(questions: list[Question], heldout: int) -> tuple[list[Question], list[Question]]:
    """The last `heldout` questions are for evaluation only."""
    if heldout >= len(questions):
        raise ConfigError(f"heldout={heldout} leaves no training questions out of {len(questions)}")
    return (questions[:-heldout], questions[-heldout:]) if heldout else (questions, [])


def last_checkpoint(grpo_dir: Path) -> str | None:
    """The newest TRL checkpoint directory, if any."""
    found = sorted(grpo_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return str(found[-1]) if found else None


class Run:
    """One training run's directory and phases; each phase is skipped when its output already exists."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, say: Callable[[str], None] = print):
        self.cfg = cfg
        self.dir = run_dir
        self.say = say
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.toml").write_text(cfg.to_toml())
        self.results: dict[str, Any] = json.loads(self.eval_path.read_text()) if self.eval_path.exists() else {}

    @property
    def eval_path(self) -> Path:
        """Held-out results at the three points."""
        return self.dir / "eval.json"

    def evaluate(self, phase: str, model_path: str, questions: list[Question], env: RunningEnvironment) -> None:
        """Greedy held-out episodes with the model at `model_path`; results saved at once."""
        from researchrl.policy.hf import HFPolicy

        if phase in self.results or not questions:
            return
        started = time.perf_counter()
        policy = HFPolicy.load(model_path, threads=self.cfg.threads, max_batch=len(questions))
        try:
            summary, trajectories = evaluate(policy, questions, env, self.cfg.greedy_agent())
        finally:
            env.loop.run(policy.aclose())
        write_records(self.dir / f"eval_{phase}.jsonl", trajectories, append=False, phase=phase)
        self.results[phase] = {**summary.as_dict(), "seconds": round(time.perf_counter() - started, 1)}
        self.eval_path.write_text(json.dumps(self.results, indent=2))
        self.say(f"eval {phase}: reward {summary.reward:.3f}, f1 {summary.f1:.3f}, format errors "
                 f"{summary.format_error_rate:.0%}, tool calls {summary.tool_call_rate:.0%} ({self.results[phase]['seconds']} s)")

    def warm_up(self, base: str, questions: list[Question], env: RunningEnvironment) -> Path:
        """Expert demonstrations on training questions, then SFT; returns the warmed-up model."""
        from transformers import AutoTokenizer

        from researchrl.policy.tokenizers import HFChatTokenizer
        from researchrl.rl.expert import demonstrations
        from researchrl.rl.sft import read_rows, sft_rows, warm_up, write_rows

        out = self.dir / "sft"
        if (out / "model" / "config.json").exists():
            return out / "model"
        out.mkdir(exist_ok=True)
        data = out / "demonstrations.jsonl"
        if data.exists():
            rows = read_rows(data)
        else:
            tokenizer = HFChatTokenizer(AutoTokenizer.from_pretrained(base))
            demos = demonstrations(questions, tokenizer, env, self.cfg.greedy_agent(), self.cfg.sft_examples)
            rows = sft_rows(demos)
            write_rows(rows, data)
        self.say(f"warm-up: {len(rows)} expert trajectories, {sum(len(r['input_ids']) for r in rows)} tokens")
        started = time.perf_counter()
        model, history = warm_up(base, rows, out, self.cfg.sft_epochs, self.cfg.sft_learning_rate,
                                 micro_batch=self.cfg.micro_batch, seed=self.cfg.agent.seed,
                                 gradient_checkpointing=self.cfg.gradient_checkpointing)
        (out / "log_history.json").write_text(json.dumps(history, indent=1))
        self.say(f"warm-up done in {time.perf_counter() - started:.0f} s")
        return model

    def warm_up_from(self, model: str) -> Path:
        """The warm-up on its own (`researchrl sft`): opens the sandbox, runs the expert unless data exists."""
        from researchrl.policy.embedded import resolve_model_path

        train_qs, _ = split(load_questions(self.cfg.questions), self.cfg.heldout)
        env = RunningEnvironment(env_config(self.cfg), self.cfg.agent.protocol)
        try:
            return self.warm_up(resolve_model_path(model), train_qs, env)
        finally:
            env.close()

    def grpo(self, start: Path, questions: list[Question], env: RunningEnvironment) -> Path:
        """GRPO from the warmed-up model, resuming from the newest checkpoint if there is one."""
        from researchrl.rl.grpo import run_grpo
        from researchrl.rl.rollout import Rollout

        out = self.dir / "grpo"
        if (out / "model" / "config.json").exists():
            return out / "model"
        rollout = Rollout(questions, env, self.cfg.agent, log_path=self.dir / "trajectories.jsonl")
        return run_grpo(str(start), questions, rollout, self.cfg, out, self.dir / "metrics.jsonl", resume=last_checkpoint(out))


def train(cfg: TrainConfig, run_dir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole recipe; returns eval.json's content."""
    from researchrl.policy.embedded import check_model
    from researchrl.rl.plot import plot_run

    train_qs, held = split(load_questions(cfg.questions), cfg.heldout)  # a bad file or model fails before the run dir
    held = held[: cfg.eval_questions]
    base = check_model(cfg.model)
    run = Run(cfg, run_dir, say)
    env = RunningEnvironment(env_config(cfg, run_dir), cfg.agent.protocol)
    try:
        run.evaluate("before", base, held, env)
        warmed = run.warm_up(base, train_qs, env) if cfg.warmup else Path(base)
        if cfg.warmup:
            run.evaluate("after_sft", str(warmed), held, env)
        final = run.grpo(warmed, train_qs, env)
        run.evaluate("after", str(final), held, env)
    finally:
        env.close()
    plot_run(run_dir / "metrics.jsonl", run_dir / "curves.png")
    return run.results
