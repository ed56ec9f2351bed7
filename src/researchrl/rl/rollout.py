"""TRL's `rollout_func`, driven by our agent loop: every prompt entry becomes one full multi-turn episode.

TRL hands the function the prompts of a generation batch already repeated `num_generations` times (its
RepeatSampler), so each entry is one trajectory. We return the exact sampled ids, `env_mask` (1 = sampled by
the policy, 0 = observation/wrapper, straight from `render.Transcript`), and per-sample fields (reward parts,
tool calls, turns, termination) that reach the reward functions and the logs. Episodes run concurrently on a
persistent background event loop, so the environment's HTTP clients and sandbox live across steps; generation
batches every active episode's turn through `HFPolicy` around the trainer's own (unwrapped) model, or, with
`use_vllm`, sends each turn's exact token ids to the vLLM server (`vllm_sync.Endpoint`), synced to the trainer's
weights before the step's first rollout.

Under several processes (`ranks`), TRL hands each one a contiguous slice of the generation batch and each runs
its slice's episodes in its own environment. Sample indices (hence seeds) count over the whole batch, so a group
split across processes never samples the same seed twice. After the episodes every process sends its trajectory
records, ledger and timings to all (`ranks.gather`, pickled; records hold text and counts, not token ids): every
process then agrees on the step's stats and on a spent budget, and main alone appends trajectories.jsonl, each
record naming its `rank` and `sample`.

The step's stats say where the rollout's seconds went (`timing`: wall time with generation in flight, with tool
calls in flight, both, per tool; the rest is rendering, tokenizing and scoring), from the slowest process: the step waits for it.
They reach metrics.jsonl with the other stats (`last_stats`), among them the batch's research behaviour
(`eval.behaviour`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from researchrl.agent.loop import AgentConfig
from researchrl.environment import RunningEnvironment
from researchrl.eval import behaviour
from researchrl.policy.base import Policy
from researchrl.records import trajectory_record
from researchrl.rl import ranks
from researchrl.rl.spend import merged
from researchrl.rl.timing import PhaseClock, TimedPolicy, TimedToolset
from researchrl.rl.vllm_sync import Endpoint
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


def batch_sample_indices(texts: list[str]) -> list[int]:
    """This process's sample indices counted over every process's slice of the batch (in rank order)."""
    everyone = ranks.gather(texts)
    start = sum(len(part) for part in everyone[: ranks.rank()])
    return sample_indices([text for part in everyone for text in part])[start : start + len(texts)]


def batch_stats(records: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    """Per-episode means of tool calls by type and tool errors, and the rollout's sampled tokens per second."""
    n = max(1, len(records))
    calls = Counter(name for r in records for name in r["tool_calls"])
    sampled = sum(r["sampled_tokens"] for r in records)
    return {
        "tools/web_search_per_episode": calls["web_search"] / n,
        "tools/browse_webpage_per_episode": calls["browse_webpage"] / n,
        "tools/errors_per_episode": sum(len(r["tool_errors"]) for r in records) / n,
        "tokens_per_second/rollout": sampled / seconds if seconds else 0.0,
    }


def web_totals(parts: list[dict[str, float]]) -> dict[str, float]:
    """Every process's ledger step metrics summed; the cache hit rate recomputed from the summed calls and hits."""
    total: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + value
    calls = sum(v for k, v in total.items() if k.startswith("web/calls/"))
    hits = sum(v for k, v in total.items() if k.startswith("web/hits/"))
    total["web/cache_hit_rate"] = hits / (calls + hits) if calls + hits else 0.0
    return total


@dataclass(frozen=True)
class Share:
    """What one process reports after its episodes of a generation batch."""

    records: list[dict[str, Any]]  # its trajectory records, in batch order
    seconds: float  # its rollout wall time
    web: dict[str, float]  # its ledger's step metrics
    ledger: str  # its ledger's run totals (Ledger.to_json)
    run_exhausted: bool  # its share of the run budget is spent
    timing: dict[str, float] = field(default_factory=dict)  # its "time/..." metrics (rl.timing)


def vllm_policy(endpoint: Endpoint, tokenizer: Any) -> Policy:
    """vLLM speaks OpenAI's /v1/completions with token ids: our completions-mode policy, per turn, refusing inexact ids."""
    from researchrl.policy.openai import OpenAIPolicy

    return OpenAIPolicy(f"{endpoint.url}/v1", endpoint.model, tokenizer=tokenizer, require_exact=True)


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

    def __init__(
        self, questions: list[Question], env: RunningEnvironment, agent: AgentConfig, log_path: Path | None = None,
        vllm: Endpoint | None = None,
    ):
        self.by_text = {q.question: q for q in questions}
        self.vllm = vllm  # sample on this vLLM server instead of the trainer's model
        self.agent = agent
        self.env = env
        self.log_path = log_path
        self.last_seconds = 0.0
        self.last_stats: dict[str, float] = {}
        self.run_exhausted = False  # some process's share of the run budget is spent: the run stops after this step
        self.peer_ledgers: list[str] = []  # the other processes' run totals, as last reported

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        """Episodes for one generation batch with the trainer's current weights."""
        return self.run(prompts, trainer.state.global_step + 1, self._trainer_policy(trainer, len(prompts)))

    def run(self, prompts: list[Any], step: int, policy: contextlib.AbstractContextManager[Policy]) -> dict[str, list[Any]]:
        """Episodes for one generation batch with the policy `policy` opens (closed after them), logged as `step`."""
        texts = [prompt_text(p) for p in prompts]
        missing = [t for t in texts if t not in self.by_text]
        if missing:
            raise KeyError(f"rollout got a prompt that is not a training question: {missing[0][:80]!r}")
        questions = [self.by_text[t] for t in texts]
        ledger = self.env.tools.ledger
        ledger.start_step(step)
        started = time.perf_counter()
        with policy as opened:
            trajectories, clock = self._episodes(opened, questions, texts)
        records = [trajectory_record(t, step=step, rank=ranks.rank()) for t in trajectories]
        seconds = time.perf_counter() - started
        timing = clock.metrics(seconds, list(self.env.tools.tools))
        share = Share(records, seconds, ledger.metrics(), ledger.to_json(), ledger.run_exhausted, timing)
        self._report(ranks.gather(share))
        return to_trl(trajectories)

    @contextlib.contextmanager
    def _trainer_policy(self, trainer: Any, batch: int) -> Iterator[Policy]:
        """The step's policy: the vLLM server (TRL synced its weights before calling us), or the trainer's own model."""
        from trl.models.utils import unwrap_model_for_generation

        from researchrl.policy.hf import HFPolicy

        if self.vllm is not None:
            yield vllm_policy(self.vllm, trainer.processing_class)
            return
        model = trainer.model_wrapped
        was_training = model.training
        with unwrap_model_for_generation(
            model, trainer.accelerator, gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs
        ) as unwrapped:
            yield HFPolicy(unwrapped, trainer.processing_class, batch)
        model.train(was_training)

    def ledger_json(self) -> str:
        """The run's spend so far: this process's ledger plus the others' last reported totals."""
        return merged([self.env.tools.ledger.to_json(), *self.peer_ledgers])

    def _episodes(self, policy: Policy, questions: list[Question], texts: list[str]) -> tuple[list[Trajectory], PhaseClock]:
        """All episodes of the batch with `policy`, which is closed afterwards; generate and tool calls timed."""
        clock = PhaseClock()
        timed, tools = TimedPolicy(policy, clock), TimedToolset(self.env.tools, clock)
        try:
            return self.env.episodes(questions, timed, self.agent, batch_sample_indices(texts), tools), clock
        finally:
            self.env.loop.run(policy.aclose())

    def _report(self, shares: list[Share]) -> None:
        """Stats over every process's episodes; main appends one JSON line per trajectory, numbered as it was seeded."""
        records = [r for share in shares for r in share.records]
        self.last_seconds = max(share.seconds for share in shares)
        self.last_stats = {**batch_stats(records, self.last_seconds), **behaviour.summarize(records),
                           **web_totals([share.web for share in shares])}
        self.last_stats.update(max(shares, key=lambda share: share.seconds).timing)
        if self.vllm is not None:
            self.last_stats.update(self.vllm.stats)
        self.run_exhausted = any(share.run_exhausted for share in shares)
        self.peer_ledgers = [share.ledger for rank, share in enumerate(shares) if rank != ranks.rank()]
        if self.log_path is not None and ranks.is_main():
            samples = sample_indices([r["question"] for r in records])
            with self.log_path.open("a") as f:
                for record, sample in zip(records, samples):
                    f.write(json.dumps({"step": record["step"], "sample": sample, **record}) + "\n")
