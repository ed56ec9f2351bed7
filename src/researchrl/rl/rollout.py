"""TRL's `rollout_func`, driven by our agent loop: every prompt entry becomes one full multi-turn episode.

TRL hands the function the prompts of a generation batch already repeated `num_generations` times (its
RepeatSampler), so each entry is one trajectory. We return the exact sampled ids, `env_mask` (1 = sampled by
the policy, 0 = observation/wrapper, straight from `render.Transcript`), and per-sample fields (reward parts,
tool calls, turns, termination) that reach the reward functions and the logs. Episodes run concurrently on a
persistent background event loop, so the environment's HTTP clients and sandbox live across steps; generation
batches every active episode's turn through `HFPolicy` around the trainer's own (unwrapped) model, or, with
`use_vllm` (server mode), sends each turn's exact token ids to TRL's vLLM server.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from researchrl.agent.loop import AgentConfig
from researchrl.environment import RunningEnvironment
from researchrl.errors import ConfigError
from researchrl.policy.base import Policy
from researchrl.records import write_records
from researchrl.types import Question, Trajectory


def prompt_text(prompt: Any) -> str:
    """The question text of a dataset prompt (a plain string, or a one-message conversation)."""
    if isinstance(prompt, str):
        return prompt
    return prompt[-1]["content"]


def sample_indices(keys: list[str]) -> list[int]:
    """0..G-1 for each repeat of the same question, so seeds differ across a group."""
    seen: Counter[str] = Counter()
    out = []
    for key in keys:
        out.append(seen[key])
        seen[key] += 1
    return out


def batch_stats(trajectories: list[Trajectory], seconds: float) -> dict[str, float]:
    """Per-episode means of tool calls by type and tool errors, and the rollout's sampled tokens per second."""
    n = max(1, len(trajectories))
    calls = Counter(c.name for t in trajectories for c in t.tool_calls)
    sampled = sum(sum(t.mask) for t in trajectories)
    return {
        "tools/web_search_per_episode": calls["web_search"] / n,
        "tools/browse_webpage_per_episode": calls["browse_webpage"] / n,
        "tools/errors_per_episode": sum(len(t.tool_errors) for t in trajectories) / n,
        "tokens_per_second/rollout": sampled / seconds if seconds else 0.0,
    }


def vllm_policy(args: Any, tokenizer: Any) -> Policy:
    """TRL's `trl vllm-serve` speaks OpenAI's /v1/completions with token ids: our completions-mode policy, per turn."""
    from researchrl.policy.openai import OpenAIPolicy

    if not args.vllm_server_base_url:
        raise ConfigError("use_vllm needs vllm_server_base_url (the `trl vllm-serve` address)")
    return OpenAIPolicy(f"{args.vllm_server_base_url.rstrip('/')}/v1", tokenizer.name_or_path, tokenizer=tokenizer)


def to_trl(trajectories: list[Trajectory]) -> dict[str, list[Any]]:
    """The dict TRL's rollout_func contract asks for, plus our per-sample fields for rewards and logs."""
    return {
        "prompt_ids": [t.prompt_ids for t in trajectories],
        "completion_ids": [t.completion_ids for t in trajectories],
        "logprobs": [[0.0 if x is None else x for x in t.logprobs] for t in trajectories],
        "env_mask": [t.mask for t in trajectories],
        "reward": [t.reward.reward for t in trajectories],
        "format_ok": [float(t.reward.format_ok) for t in trajectories],
        "f1": [t.reward.f1 for t in trajectories],
        "em": [t.reward.em for t in trajectories],
        "answered": [float(t.answer is not None) for t in trajectories],
        "turns": [len(t.turns) for t in trajectories],
        "tool_calls": [len(t.tool_calls) for t in trajectories],
        "termination": [t.termination for t in trajectories],
    }


class Rollout:
    """The callable handed to GRPOTrainer(rollout_func=...); also appends every trajectory to a JSONL log."""

    def __init__(self, questions: list[Question], env: RunningEnvironment, agent: AgentConfig, log_path: Path | None = None):
        self.by_text = {q.question: q for q in questions}
        self.agent = agent
        self.env = env
        self.log_path = log_path
        self.last_seconds = 0.0
        self.last_stats: dict[str, float] = {}

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        """Episodes for one generation batch with the trainer's current weights."""
        from trl.models.utils import unwrap_model_for_generation

        from researchrl.policy.hf import HFPolicy

        texts = [prompt_text(p) for p in prompts]
        missing = [t for t in texts if t not in self.by_text]
        if missing:
            raise KeyError(f"rollout got a prompt that is not a training question: {missing[0][:80]!r}")
        questions = [self.by_text[t] for t in texts]
        ledger = self.env.tools.ledger
        ledger.start_step(trainer.state.global_step + 1)
        started = time.perf_counter()
        model = trainer.model_wrapped
        was_training = model.training
        if trainer.args.use_vllm:  # TRL synced the weights to its vLLM server before calling us
            trajectories = self._episodes(vllm_policy(trainer.args, trainer.processing_class), questions, texts)
        else:
            with unwrap_model_for_generation(
                model, trainer.accelerator, gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs
            ) as unwrapped:
                trajectories = self._episodes(HFPolicy(unwrapped, trainer.processing_class, len(prompts)), questions, texts)
            model.train(was_training)
        self.last_seconds = time.perf_counter() - started
        self.last_stats = {**batch_stats(trajectories, self.last_seconds), **ledger.metrics()}
        self._log(trajectories, trainer.state.global_step)
        return to_trl(trajectories)

    def _episodes(self, policy: Policy, questions: list[Question], texts: list[str]) -> list[Trajectory]:
        """All episodes of the batch with `policy`, which is closed afterwards."""
        try:
            return self.env.episodes(questions, policy, self.agent, sample_indices(texts))
        finally:
            self.env.loop.run(policy.aclose())

    def _log(self, trajectories: list[Trajectory], step: int) -> None:
        """Append one JSON line per trajectory."""
        if self.log_path is not None:
            write_records(self.log_path, trajectories, append=True, step=step + 1)
