"""vLLM's CPU engine as the rollout engine, for real: one `vllm serve` of the embedded model started by a fixture.

Two GRPO steps sample from it with the weights synced after every optimizer step (checked against the trainer's
own forward pass and TRL's importance ratio); `ask`, `eval` and the completions-mode policy run against the same
server token-exactly. The `paper-mini` preset is in test_paper_mini.py, a module of its own so that this module's
server is stopped before it starts its own (two servers beside two training processes overflowed 24 GB in CI).
Slow (server start ~30-90 s on 2 cores); needs `bash scripts/vllm.sh` (the test command runs it).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from researchrl.config import merge
from researchrl.errors import ConfigError
from researchrl.rl.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.model]
REPO = Path(__file__).resolve().parents[2]
OTHER_TEXT = "Who wrote the novel about the white whale? <think>Herman Melville wrote Moby-Dick.</think> <answer>Melville</answer>"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def vllm_servers() -> set[int]:
    """Pids of running `vllm serve` processes."""
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "serve" in cmdline and any(part.endswith("vllm") for part in cmdline[:2]):
            found.add(proc.info["pid"])
    return found


@pytest.fixture(scope="module")
def checkpoint() -> str:
    from researchrl.policy.embedded import embedded_checkpoint

    return str(embedded_checkpoint())


@pytest.fixture(scope="module")
def server(tmp_path_factory, checkpoint):  # noqa: ANN001, ANN201
    from researchrl.policy.vllm_server import ServerSpec, VLLMServer, find_vllm

    try:
        find_vllm()
    except ConfigError as err:
        pytest.fail(f"{err} (the test command builds it)")
    with VLLMServer(ServerSpec(checkpoint), tmp_path_factory.mktemp("vllm") / "vllm.log") as running:
        yield running


def max_gap(url: str, model, ids: list[int]) -> float:  # noqa: ANN001
    from researchrl.rl.vllm_sync import server_logprobs, trainer_logprobs

    return max(abs(a - b) for a, b in zip(server_logprobs(url, ids), trainer_logprobs(model, ids)))


def load(path: str | Path):  # noqa: ANN201
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)


def test_grpo_steps_sample_from_the_weights_trl_trains(server, checkpoint, tmp_path: Path) -> None:  # noqa: ANN001
    from transformers import AutoTokenizer

    from researchrl.rl.train import train

    cfg = merge(load_config("cpu"), dict(
        use_vllm=True, vllm="external", vllm_server_base_url=server.url, heldout=0, sft_examples=8,
        sft_learning_rate=1e-4, learning_rate=1e-4, group_size=4, questions_per_step=2, micro_batch=2, max_steps=2,
        save_steps=1, env=dict(top_k=2, snippet_chars=120),
        agent=dict(max_turns=3, max_observation_chars=500, sampling=dict(max_new_tokens=96)),
    ))
    run = tmp_path / "run"
    train(cfg, run, say=print)
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:  # every step's sync was checked, and the rollout's logprobs are the trainer's (ratio ≈ 1)
        assert m["vllm/sync_logprob_gap"] < 1e-3 and m["vllm/restarts"] == 0
        assert m["sampling/sampling_logp_difference/max"] < 1e-2
        assert m["sampling/importance_sampling_ratio/mean"] == pytest.approx(1.0, abs=1e-2)
    rows = read_jsonl(run / "trajectories.jsonl")
    assert [r["step"] for r in rows] == [1] * 8 + [2] * 8 and all(r["sampled_tokens"] > 0 for r in rows)

    # independent of the probe: the server now holds checkpoint-1 (synced before step 2), not the base or the warm-up
    ids = AutoTokenizer.from_pretrained(checkpoint)(OTHER_TEXT)["input_ids"]
    synced = max_gap(server.url, load(run / "grpo" / "checkpoint-1"), ids)
    warmed = max_gap(server.url, load(run / "sft" / "model"), ids)
    base = max_gap(server.url, load(checkpoint), ids)
    print(f"\nserver vs checkpoint-1 {synced:.2e}, vs warm-up {warmed:.2e}, vs base {base:.2e}")
    assert synced < 1e-3
    assert base > 10 * synced, "the server holds the warmed-up, trained weights, not the ones it started with"
    if metrics[0]["frac_reward_zero_std"] < 1:  # step 1 had a learning signal, so its update moved the weights
        assert warmed > 10 * synced, "the server has the weights of step 1's update"
    assert not (run / "vllm_weights").exists()


def test_ask_eval_and_the_policy_are_token_exact_on_the_server(server, checkpoint, shared_data, tmp_path: Path) -> None:  # noqa: ANN001
    import torch
    from transformers import AutoTokenizer

    from researchrl.agent.loop import AgentConfig, run_episode
    from researchrl.data.load import load_questions
    from researchrl.environment import EnvConfig, open_environment
    from researchrl.policy.base import Context, ContextOverflow, Message, Sampling
    from researchrl.policy.openai import OpenAIPolicy
    from researchrl.policy.vllm_server import SERVED_NAME
    from researchrl.rl.vllm_sync import reload

    reload(server.url, Path(checkpoint))  # the base weights, whatever an earlier test synced
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    questions = load_questions(shared_data / "wiki" / "questions.jsonl")[:3]
    agent = AgentConfig(max_turns=3, sampling=Sampling(temperature=1.0, max_new_tokens=96))

    async def episodes():  # noqa: ANN202
        policy = OpenAIPolicy(f"{server.url}/v1", SERVED_NAME, tokenizer=tokenizer)
        async with open_environment(EnvConfig(top_k=2, snippet_chars=120)) as tools:
            done = await asyncio.gather(*(run_episode(q, policy, tools, agent, sample_index=i) for i, q in enumerate(questions)))
        stopped = await policy.generate(Context(tokenizer("The capital of France is")["input_ids"], [], ""),
                                        Sampling(temperature=0.0, max_new_tokens=32, stop=(" ",)))
        await policy.aclose()
        # the server's own context size was asked; past it, its 400 is an overflow, not a failure of the run
        limit = policy.context_limit
        blind = OpenAIPolicy(f"{server.url}/v1", SERVED_NAME, tokenizer=tokenizer, context_tokens=10**6)
        with pytest.raises(ContextOverflow):
            await blind.generate(Context([198] * (limit + 8), [], ""), Sampling(max_new_tokens=4))
        await blind.aclose()
        chat = OpenAIPolicy(f"{server.url}/v1", SERVED_NAME)  # chat mode: the prefill is continued, not repeated
        continued = await chat.generate(Context([], [Message("user", "Who wrote Hamlet?")], "<think>"), Sampling(max_new_tokens=16))
        await chat.aclose()
        return done, stopped, limit, continued

    trajectories, stopped, limit, continued = asyncio.run(episodes())
    assert limit == server.spec.max_model_len and all(t.exact_tokens for t in trajectories)
    assert continued.usage is not None and continued.usage[1] > 0 and not continued.text.startswith("<think>")
    # the text is exactly the sampled ids', stop string included (vLLM's own text ends at the stop string, mid-token)
    assert stopped.finish_reason == "stop" and stopped.text == tokenizer.decode(stopped.token_ids) and " " in stopped.text
    model = load(checkpoint)
    for t in trajectories:  # every sampled id's logprob is the model's own; observations carry none
        ids = t.prompt_ids + t.completion_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, len(t.prompt_ids) - 1 : -1].log_softmax(-1)
        ours = logits.gather(1, torch.tensor(t.completion_ids)[:, None])[:, 0].tolist()
        sampled = [i for i, m in enumerate(t.mask) if m]
        assert sampled and all(t.logprobs[i] is not None for i in sampled)
        assert max(abs(t.logprobs[i] - ours[i]) for i in sampled) < 1e-3
        assert all(t.logprobs[i] is None for i, m in enumerate(t.mask) if not m)

    cli = [sys.executable, "-m", "researchrl.cli"]
    endpoint = ["--base-url", f"{server.url}/v1", "--model", SERVED_NAME, "--tokenizer", checkpoint]
    asked = subprocess.run([*cli, "ask", "Who wrote Moby-Dick?", *endpoint, "--max-turns", "2", "--max-new-tokens", "64"],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert asked.returncode == 0, asked.stderr[-2000:]
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": q.question, "answers": list(q.answers)}) + "\n" for q in questions))
    evaluated = subprocess.run([*cli, "eval", "--data", str(data), "--out", str(tmp_path / "eval"), *endpoint,
                                "--max-turns", "2", "--max-new-tokens", "64"],
                               capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    records = read_jsonl(tmp_path / "eval" / "records.jsonl")
    assert len(records) == len(questions) and all(r["exact_tokens"] for r in records)
