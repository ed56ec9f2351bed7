"""Real GRPO steps on the embedded SmolLM2 through TRL with our rollout_func: the contract, learning, resuming.

One module-scoped run keeps this affordable on 2 cores: a tiny warm-up (so rewards vary within a group), two
GRPO steps with a checkpoint after each, then a second run resumed from checkpoint-1. Slow (~4.5 min): `.ci/run`
runs it; the default suite keeps tests/test_train_run.py's whole real `researchrl train` (warm-up, GRPO, evaluations).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

from researchrl.data.load import load_questions
from researchrl.environment import RunningEnvironment
from researchrl.config import merge
from researchrl.rl.config import load_config
from researchrl.rl.train import BudgetStop, env_config

pytestmark = [pytest.mark.model, pytest.mark.slow]

# amp pinned off: with bf16 autocast (on where the CPU has native bf16) this 4-demonstration warm-up left every rollout
# a first-turn format error on an AVX512-BF16 host, so no group had reward variance to train on
CFG = merge(load_config("cpu"), dict(
    group_size=4, questions_per_step=1, micro_batch=2, max_steps=2, save_steps=1, learning_rate=2e-5, sft_learning_rate=1e-4, amp=False,
    env=dict(top_k=2, snippet_chars=120), agent=dict(max_turns=3, max_observation_chars=500, sampling=dict(max_new_tokens=96)),
))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):  # noqa: ANN001, ANN201
    pytest.importorskip("trl")
    from transformers import AutoTokenizer

    from researchrl.policy.embedded import embedded_checkpoint
    from researchrl.policy.tokenizers import HFChatTokenizer
    from researchrl.rl.expert import demonstrations
    from researchrl.rl.grpo import run_grpo
    from researchrl.rl.lm_head import resolve_lm_head
    from researchrl.rl.precision import resolve_amp
    from researchrl.rl.rollout import Rollout
    from researchrl.rl.sft import sft_rows, warm_up

    root = tmp_path_factory.mktemp("train")
    questions = load_questions(shared_data / "wiki" / "questions.jsonl")[:24]
    env = RunningEnvironment(env_config(CFG), "deepresearcher")
    base = str(embedded_checkpoint())
    demos = demonstrations(questions, HFChatTokenizer(AutoTokenizer.from_pretrained(base)), env, CFG.greedy_agent(), 4)
    sft_model, _ = warm_up(base, sft_rows(demos), root / "sft", epochs=1, learning_rate=CFG.sft_learning_rate,
                           amp=bool(resolve_amp(CFG).amp), fused_lm_head=bool(resolve_lm_head(CFG).fused_lm_head))
    a = root / "a"
    rollout = Rollout(questions, env, CFG.agent, log_path=a / "trajectories.jsonl")
    a.mkdir()
    final = run_grpo(str(sft_model), questions, rollout, CFG, a / "grpo", a / "metrics.jsonl")
    b = root / "b"
    (b / "grpo").mkdir(parents=True)
    shutil.copytree(a / "grpo" / "checkpoint-1", b / "grpo" / "checkpoint-1")
    resumed = Rollout(questions, env, CFG.agent, log_path=b / "trajectories.jsonl")
    run_grpo(str(sft_model), questions, resumed, CFG, b / "grpo", b / "metrics.jsonl", resume=str(b / "grpo" / "checkpoint-1"))
    # a run whose web budget is spent: the step completes, is checkpointed, and the run stops with BudgetStop
    c = root / "c"
    c.mkdir()
    broke = dataclasses.replace(env_config(CFG, c), prices=(("sandbox", 0.01),), run_budget_usd=0.0)
    env_c = RunningEnvironment(broke, "deepresearcher")
    stopped = Rollout(questions, env_c, CFG.agent, log_path=c / "trajectories.jsonl")
    try:
        with pytest.raises(BudgetStop) as budget_stop:
            run_grpo(str(sft_model), questions, stopped, CFG, c / "grpo", c / "metrics.jsonl")
    finally:
        env_c.close()
    yield {"a": a, "b": b, "c": c, "budget_stop": str(budget_stop.value), "sft": sft_model, "final": final, "env": env,
           "questions": questions}
    env.close()


def test_two_steps_log_finite_losses_and_change_the_parameters(run) -> None:  # noqa: ANN001
    import torch
    from safetensors.torch import load_file

    metrics = read_jsonl(run["a"] / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(math.isfinite(float(m["loss"])) for m in metrics)
    assert any(float(m["grad_norm"]) > 0 for m in metrics), "some group must have had reward variance"
    before = load_file(str(run["sft"] / "model.safetensors"))
    after = load_file(str(run["final"] / "model.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2


def test_each_prompt_is_one_trajectory_and_groups_share_a_question(run) -> None:  # noqa: ANN001
    rows = read_jsonl(run["a"] / "trajectories.jsonl")
    assert len(rows) == CFG.max_steps * CFG.group_size
    for step in (1, 2):
        group = [r for r in rows if r["step"] == step]
        assert len(group) == CFG.group_size and len({r["question_id"] for r in group}) == 1


def test_trained_token_count_equals_policy_sampled_tokens(run) -> None:  # noqa: ANN001
    """TRL counts completion length as sum(env_mask): it must equal what the policy sampled, not observations."""
    rows = read_jsonl(run["a"] / "trajectories.jsonl")
    for m in read_jsonl(run["a"] / "metrics.jsonl"):
        group = [r for r in rows if r["step"] == m["step"]]
        sampled = [r["sampled_tokens"] for r in group]
        assert float(m["completions/mean_length"]) == pytest.approx(sum(sampled) / len(sampled))
        assert all(r["sampled_tokens"] < r["completion_tokens"] or not any("observation" in t for t in r["turns"]) for r in group)


def test_resumed_run_continues_at_the_next_step_with_the_same_data(run) -> None:  # noqa: ANN001
    original = read_jsonl(run["a"] / "trajectories.jsonl")
    resumed = read_jsonl(run["b"] / "trajectories.jsonl")
    assert {r["step"] for r in resumed} == {2}
    assert [r["question_id"] for r in resumed] == [r["question_id"] for r in original if r["step"] == 2]
    assert [m["step"] for m in read_jsonl(run["b"] / "metrics.jsonl")] == [2]
    assert (run["b"] / "grpo" / "checkpoint-2").exists()


def test_rollout_func_masks_exactly_the_observation_tokens(run) -> None:  # noqa: ANN001
    """Call the rollout as TRL does (prompts already repeated G times) and check env_mask token by token."""
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    from researchrl.rl.grpo import grpo_args
    from researchrl.rl.rewards import REWARD_FUNCS
    from researchrl.rl.rollout import Rollout

    from datasets import Dataset

    questions = run["questions"]
    rollout = Rollout(questions, run["env"], CFG.agent)
    tokenizer = AutoTokenizer.from_pretrained(run["final"])
    trainer = GRPOTrainer(model=str(run["final"]), reward_funcs=REWARD_FUNCS, args=grpo_args(CFG, run["a"] / "probe"),
                          train_dataset=Dataset.from_list([{"prompt": q.question} for q in questions]),
                          processing_class=tokenizer, rollout_func=rollout)
    prompts = [questions[0].question] * 2 + [questions[1].question] * 2
    out = rollout(prompts, trainer)
    assert len(out["completion_ids"]) == 4 and len(out["prompt_ids"]) == 4
    for ids, mask, logprobs in zip(out["completion_ids"], out["env_mask"], out["logprobs"]):
        assert len(ids) == len(mask) == len(logprobs)
        masked_out = tokenizer.decode([i for i, m in zip(ids, mask) if m == 0])
        trained = tokenizer.decode([i for i, m in zip(ids, mask) if m == 1])
        assert "<tool_response>" not in trained and "<|im_start|>user" not in trained
        if "<tool_response>" in tokenizer.decode(ids):
            assert "<tool_response>" in masked_out


def test_a_spent_run_budget_checkpoints_the_step_and_stops(run) -> None:  # noqa: ANN001
    c = run["c"]
    assert (c / "grpo" / "checkpoint-1").is_dir(), "the step that spent the budget must be checkpointed"
    assert not (c / "grpo" / "checkpoint-2").exists() and not (c / "grpo" / "model").exists()
    assert "run budget $0.0 reached at step 1" in run["budget_stop"] and "--resume" in run["budget_stop"]
    logged = read_jsonl(c / "trajectories.jsonl")
    assert {r["step"] for r in logged} == {1} and len(logged) == CFG.group_size * CFG.questions_per_step
    searched = [r for r in logged if "web_search" in r["tool_calls"]]
    for record in searched:  # every priced search was refused and answered with a budget observation
        assert "search_budget_exhausted" in record["tool_errors"]
    ledger = json.loads((c / "ledger.json").read_text())
    assert ledger, "the ledger is saved beside the metrics for a resume"
    metrics = read_jsonl(c / "metrics.jsonl")
    assert metrics[-1]["web/cost_usd_run"] == 0.0

