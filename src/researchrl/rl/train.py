"""`researchrl train`: evaluate the base model, warm it up on expert trajectories, train with GRPO, evaluate again.

A run directory holds everything: config.toml (resolved; `--resume` and `eval --run` reload it), sft/ (warm-up
data and model), grpo/ (TRL checkpoints, final model), trajectories.jsonl (every GRPO rollout), metrics.jsonl
(every step), ledger.json (web spend), eval.json (held-out scores and behaviour before / after warm-up / GRPO),
eval_<phase>.jsonl (held-out trajectories), paired.json (phase differences with paired bootstrap intervals, rewritten
after each evaluation), curves.png. A run stopped at any point, a kill included, resumes with `--resume RUN_DIR`:
finished phases are skipped, GRPO continues from its newest complete checkpoint (`checkpoints`;
log lines of later steps are dropped, as those steps run again), and a raised max_steps trains a finished run on.
What marks a phase done is written whole or not at all (`atomic`): eval.json and the other files are renamed into
place, sft/model and grpo/model are saved as NAME.partial and renamed when complete.

Several processes (`accelerate launch --multi_gpu --num_processes N -m researchrl.cli train ...`; `ranks`): each
opens its own environment and runs its share of every GRPO step's episodes; main alone writes the run directory
(TRL saves checkpoints on main). Held-out evaluations and the expert's demonstrations run on main while the others
wait at a barrier; the SFT warm-up and GRPO run on every process together (DDP). Web spend across them: `spend`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from researchrl.atomic import remove_dir, replacing, write_text
from researchrl.data.load import load_questions
from researchrl.environment import EnvConfig, RunningEnvironment
from researchrl.errors import ConfigError, UserError
from researchrl.eval import behaviour
from researchrl.eval.runner import evaluate
from researchrl.records import iter_jsonl, trajectory_record, write_records
from researchrl.rl import ranks
from researchrl.rl.checkpoints import export_model, resumable
from researchrl.rl.config import TrainConfig
from researchrl.rl.spend import merged, process_env
from researchrl.types import Question

PHASES = ("before", "after_sft", "after")
COMPARED = (("after", "after_sft"), ("after_sft", "before"), ("after", "before"))  # paired.json: later minus earlier


class BudgetStop(UserError):
    """The run's spend cap was reached: the last step finished and was checkpointed; resuming needs a larger cap."""


def env_config(cfg: TrainConfig, run_dir: Path | None = None) -> EnvConfig:
    """The run's environment; with `run_dir`, spend is counted on from the run's ledger.json (a resumed run keeps its budget)."""
    return cfg.env if run_dir is None else process_env(cfg.env, run_dir / "ledger.json")


def split(questions: list[Question], heldout: int) -> tuple[list[Question], list[Question]]:
    """The last `heldout` questions are for evaluation only."""
    if heldout >= len(questions):
        raise ConfigError(f"heldout={heldout} leaves no training questions out of {len(questions)}")
    return (questions[:-heldout], questions[-heldout:]) if heldout else (questions, [])


def trained_steps(checkpoint: str | None) -> int:
    """The optimizer steps a checkpoint holds (0 without one)."""
    return 0 if checkpoint is None else int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])


def drop_steps_after(log: Path, step: int) -> None:
    """Keep a step log's lines up to `step`: a resumed run writes later steps again (a line cut by a kill goes too)."""
    if not log.exists():
        return
    kept = []
    for line in log.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except ValueError:
            continue
    write_text(log, "".join(kept))


class Run:
    """One training run's directory and phases; each phase is skipped when its output already exists.

    Every process builds the Run and calls each phase; main alone writes, and each phase ends at a barrier.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, say: Callable[[str], None] = print):
        from researchrl.rl.lm_head import resolve_lm_head
        from researchrl.rl.precision import resolve_amp, resolve_eval_bf16

        self.cfg = cfg = resolve_lm_head(resolve_eval_bf16(resolve_amp(cfg)))  # config.toml records how training computed
        self.dir = run_dir
        self.say = say if ranks.is_main() else lambda line: None
        self.threads = ranks.cpu_threads(cfg.threads)
        self.peer_ledgers: list[str] = []  # the other processes' spend, as GRPO last reported it
        if ranks.is_main():
            self.dir.mkdir(parents=True, exist_ok=True)
            write_text(self.dir / "config.toml", cfg.to_toml())
        ranks.barrier()
        self.results: dict[str, Any] = json.loads(self.eval_path.read_text()) if self.eval_path.exists() else {}

    @property
    def eval_path(self) -> Path:
        """Held-out results at the three points."""
        return self.dir / "eval.json"

    def evaluate(self, phase: str, model_path: str, questions: list[Question], env: RunningEnvironment) -> None:
        """Greedy held-out episodes with the model at `model_path`, on main while the others wait; results saved at once."""
        from researchrl.policy.hf import HFPolicy

        if ranks.is_main() and phase not in self.results and questions:
            started = time.perf_counter()
            policy = HFPolicy.load(model_path, threads=self.threads, max_batch=len(questions), bf16=bool(self.cfg.eval_bf16))
            try:
                summary, trajectories = evaluate(policy, questions, env, self.cfg.greedy_agent())
            finally:
                env.loop.run(policy.aclose())
            with replacing(self.dir / f"eval_{phase}.jsonl") as records:
                write_records(records, trajectories, append=False, phase=phase)
            behaved = behaviour.summarize(trajectory_record(t) for t in trajectories)
            self.results[phase] = {**summary.as_dict(), **behaved, "seconds": round(time.perf_counter() - started, 1)}
            write_text(self.eval_path, json.dumps(self.results, indent=2))
            self.save_ledger(env)
            self.say(f"eval {phase}: reward {summary.reward:.3f}, f1 {summary.f1:.3f}, format errors "
                     f"{summary.format_error_rate:.0%}, tool calls {summary.tool_call_rate:.0%} ({self.results[phase]['seconds']} s)")
            self.compare(phase)
        ranks.barrier()

    def compare(self, phase: str) -> None:
        """paired.json: each later phase minus an earlier one on the same held-out questions, with a paired bootstrap
        95 % interval of the F1 and reward differences (main, after each evaluation; the new `phase`'s pairs printed)."""
        from researchrl.eval.paired import compare

        files = {p: self.dir / f"eval_{p}.jsonl" for p in PHASES}
        records = {p: list(iter_jsonl(f)) for p, f in files.items() if f.exists()}
        paired = {f"{a} - {b}": compare([records[a]], [records[b]]) for a, b in COMPARED if a in records and b in records}
        if paired:
            write_text(self.dir / "paired.json", json.dumps(paired, indent=2))
        for name, diff in paired.items():
            if name.startswith(f"{phase} - "):
                self.say(f"{name} (paired, {diff['f1']['n']} questions, 95 % interval): " + ", ".join(
                    f"{m} {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" for m, d in diff.items()))

    def save_ledger(self, env: RunningEnvironment) -> None:
        """ledger.json: this process's spend plus the other processes' last reported spend (main only)."""
        if ranks.is_main():
            write_text(self.dir / "ledger.json", merged([env.tools.ledger.to_json(), *self.peer_ledgers]))

    def warm_up(self, base: str, questions: list[Question], env: RunningEnvironment) -> Path:
        """Expert demonstrations on training questions (main), then SFT (every process); returns the warmed-up model."""
        from researchrl.rl.sft import read_rows, warm_up

        out = self.dir / "sft"
        if (out / "model").is_dir():  # published whole by warm_up
            return out / "model"
        data = out / "demonstrations.jsonl"
        if ranks.is_main() and not data.exists():
            self.demonstrate(base, questions, env, data)
        ranks.barrier()
        rows = read_rows(data)
        self.say(f"warm-up: {len(rows)} expert trajectories, {sum(len(r['input_ids']) for r in rows)} tokens")
        started = time.perf_counter()
        model, _ = warm_up(base, rows, out, self.cfg.sft_epochs, self.cfg.sft_learning_rate,
                           micro_batch=self.cfg.micro_batch, seed=self.cfg.agent.seed,
                           gradient_checkpointing=self.cfg.gradient_checkpointing,
                           amp=bool(self.cfg.amp or self.cfg.bf16), fused_lm_head=bool(self.cfg.fused_lm_head))
        ranks.barrier()  # main saved the model before anyone loads it
        self.say(f"warm-up done in {time.perf_counter() - started:.0f} s")
        return model

    def demonstrate(self, base: str, questions: list[Question], env: RunningEnvironment, data: Path) -> None:
        """The scripted expert's trajectories as SFT token rows in `data` (written whole, then renamed into place)."""
        from transformers import AutoTokenizer

        from researchrl.policy.tokenizers import HFChatTokenizer
        from researchrl.rl.expert import demonstrations
        from researchrl.rl.sft import sft_rows, write_rows

        data.parent.mkdir(parents=True, exist_ok=True)
        tokenizer = HFChatTokenizer(AutoTokenizer.from_pretrained(base))
        demos = demonstrations(questions, tokenizer, env, self.cfg.greedy_agent(), self.cfg.sft_examples)
        with replacing(data) as tmp:
            write_rows(sft_rows(demos), tmp)
        self.save_ledger(env)

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
        """GRPO from the warmed-up model up to max_steps, resuming from the newest complete checkpoint if there is one."""
        from researchrl.rl.grpo import run_grpo
        from researchrl.rl.rollout import Rollout
        from researchrl.rl.vllm_sync import rollout_server

        out = self.dir / "grpo"
        found = resumable(out, self.say) if ranks.is_main() else None  # main deletes cut saves; the others wait here
        checkpoint = ranks.broadcast(None if found is None else str(found))
        done = checkpoint is not None and trained_steps(checkpoint) >= self.cfg.max_steps
        if (out / "model").is_dir() and (checkpoint is None or done):
            return out / "model"
        if done:  # killed after the last step's checkpoint; resumed from it, transformers would train one step more
            if ranks.is_main():
                self.say(f"GRPO finished at {out.name}/{Path(checkpoint).name}: its model becomes {out.name}/model")
                export_model(Path(checkpoint), out / "model")
            ranks.barrier()
            return out / "model"
        if ranks.is_main():
            if checkpoint is not None:
                self.say(f"GRPO resumes from {out.name}/{Path(checkpoint).name} ({trained_steps(checkpoint)} of {self.cfg.max_steps} steps done)")
            for log in ("trajectories.jsonl", "metrics.jsonl"):
                drop_steps_after(self.dir / log, trained_steps(checkpoint))
            remove_dir(out / "model")  # a finished run trained on: its final model is stale until GRPO saves anew
            if self.results.pop("after", None) is not None:  # and so is its last evaluation
                write_text(self.eval_path, json.dumps(self.results, indent=2))
        ranks.barrier()
        with rollout_server(self.cfg, str(start), self.dir) as (endpoint, server):
            rollout = Rollout(questions, env, self.cfg.agent, log_path=self.dir / "trajectories.jsonl", vllm=endpoint)
            final = run_grpo(str(start), questions, rollout, self.cfg, out, self.dir / "metrics.jsonl",
                             resume=checkpoint, server=server)
        self.peer_ledgers = rollout.peer_ledgers
        ranks.barrier()  # main saved the final model before anyone evaluates it
        return final


def train(cfg: TrainConfig, run_dir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole recipe, on every process of a launch; returns eval.json's content."""
    from researchrl.policy.embedded import check_model
    from researchrl.rl.plot import plot_run
    from researchrl.rl.vllm_sync import check_vllm, resolve_engine

    train_qs, held = split(load_questions(cfg.questions), cfg.heldout)  # a bad file or model fails before the run dir
    held = held[: cfg.eval_questions]
    base = check_model(cfg.model)
    cfg = resolve_engine(cfg)  # the run's config.toml records the engine it used
    check_vllm(cfg)
    run = Run(cfg, run_dir, say)
    run.say(f"GRPO rollouts on {'a vLLM server' if cfg.use_vllm else 'transformers'} (use_vllm = {str(cfg.use_vllm).lower()})")
    if ranks.launched():
        import torch

        torch.set_num_threads(run.threads)  # each process trains on its share of the cores
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
    if ranks.is_main():
        plot_run(run_dir / "metrics.jsonl", run_dir / "curves.png")
    return ranks.broadcast(run.results)
