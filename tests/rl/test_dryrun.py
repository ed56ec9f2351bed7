"""`researchrl train --dry-run`: numbers that follow from the config, no weights, no run directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate")
pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from researchrl.cli import app  # noqa: E402
from researchrl.rl.config import load_config  # noqa: E402
from researchrl.rl.dryrun import Launch, Model, count_tokens, estimate_memory, model_config  # noqa: E402
from researchrl.web.ledger import DEFAULT_PRICES  # noqa: E402

QWEN_7B_PARAMS = 7_615_616_512  # Qwen2.5-7B-Instruct's model card: 7.61 B


def dry(tmp_path: Path, *args: str) -> str:
    """`researchrl train --dry-run ARGS` in-process, from an empty directory; its output (exit 0 asserted)."""
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(app, ["train", "--dry-run", *args], env={"COLUMNS": "100"})
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, (result.output, result.exception)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no runs/, no run directory
    return result.output


def number(output: str, pattern: str) -> float:
    """The first number after `pattern` in the output (thousands separators dropped)."""
    found = re.search(re.escape(pattern) + r"\s*([\d,]+(?:\.\d+)?)", output)
    assert found, f"{pattern!r} not in:\n{output}"
    return float(found.group(1).replace(",", ""))


def test_paper_preset_as_a_user_runs_it(tmp_path: Path) -> None:
    """A real process: the 7B model sized from its shipped config, 7 ZeRO-3 processes, serper's list price."""
    result = subprocess.run([sys.executable, "-m", "researchrl.cli", "train", "--preset", "paper", "--dry-run"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"({QWEN_7B_PARAMS:,};" in out and "shipped with researchrl" in out
    assert "7 process(es), ZeRO-3, mixed precision bf16" in out and "accelerate_zero3_8gpu.yaml" in out
    cfg = load_config("paper")
    episodes, tool_calls = cfg.group_size * cfg.questions_per_step, cfg.agent.max_turns - 1
    assert f"over {episodes:,} episodes" in out and episodes == 4096
    assert number(out, "tools     ≤") == episodes * tool_calls
    assert number(out, "tools     ≤") * 3 * DEFAULT_PRICES["serper"] == pytest.approx(number(out, "≤ $"), abs=0.01)
    assert "assumed latencies, not measured" in out
    assert list(tmp_path.iterdir()) == []  # no runs/ and nothing else
    # 4,096 rollouts do not split over micro_batch 2 x 7 processes: said before a GPU hour is spent, with a fix
    assert "training would refuse to start; e.g. --set questions_per_step=252" in out and 16 * 252 % 14 == 0


def test_a_batch_that_splits_over_the_processes_gets_no_warning(tmp_path: Path) -> None:
    out = dry(tmp_path, "--preset", "paper", "--set", "questions_per_step=252")
    assert "batch " not in out and "over 4,032 episodes" in out


def test_cpu_preset_counts_the_embedded_models_real_parameters(tmp_path: Path) -> None:
    """SmolLM2-135M from its config: embeddings (tied) + 30 Llama blocks + the final norm = 134,515,008."""
    config, _ = model_config("embedded")
    h, i, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    block = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h  # q and o, k and v, gate/up/down, two RMSNorms
    expected = vocab * h + layers * block + h
    assert expected == 134_515_008
    out = dry(tmp_path)
    assert f"({expected:,};" in out
    assert "1 process(es), no sharding, mixed precision no (one process)" in out


def test_tokens_per_step_scale_with_group_size(tmp_path: Path) -> None:
    base = dry(tmp_path, "--preset", "paper")
    doubled = dry(tmp_path, "--preset", "paper", "--set", "group_size=32")
    assert number(doubled, "per step ≤") == 2 * number(base, "per step ≤")
    assert number(doubled, "tools     ≤") == 2 * number(base, "tools     ≤")
    assert number(doubled, "per episode ≤") == number(base, "per episode ≤")


def test_per_episode_bound_follows_the_agent_budgets() -> None:
    cfg = load_config("cpu")
    t = count_tokens(cfg)
    agent = cfg.agent
    assert (t.policy_turns, t.tool_calls) == (agent.max_turns, agent.max_turns - 1)
    assert t.sampled == agent.max_turns * agent.sampling.max_new_tokens
    assert t.observation == agent.max_observation_chars // 4  # 700 characters at 4 a token
    assert not t.capped and t.episode == t.prompt + t.sampled + t.tool_calls * t.observation
    forced = count_tokens(load_config("cpu", overrides={"agent": {"on_budget": "force_answer"}}))
    assert (forced.policy_turns, forced.tool_calls) == (agent.max_turns + 1, agent.max_turns)
    paper = count_tokens(load_config("paper"))  # 9 observations of 100k characters overflow the 32k context
    assert paper.capped and paper.episode == load_config("paper").agent.max_context_tokens + paper.observation


def test_memory_shrinks_with_zero_stage_and_processes() -> None:
    model = Model("m", "test", 7_000_000_000, 4096, 32, 32000)

    def total(processes: int, stage: int) -> float:
        launch = Launch("test", processes, stage, "bf16")
        return estimate_memory(model, launch, half=True, reference=True, micro_batch=1, seq_tokens=4096,
                               checkpointing=True).total

    by_stage = [total(8, z) for z in range(4)]
    assert by_stage == sorted(by_stage, reverse=True) and len(set(by_stage)) == 4
    by_processes = [total(n, 3) for n in (1, 2, 4, 8)]
    assert by_processes == sorted(by_processes, reverse=True) and len(set(by_processes)) == 4
    assert total(1, 0) == total(8, 0)  # data parallel alone copies everything
    one = estimate_memory(model, Launch("test", 1, 0, "no"), half=False, reference=False, micro_batch=1,
                          seq_tokens=1, checkpointing=False)
    assert (one.weights, one.gradients, one.optimizer, one.reference) == (4 * 7e9, 4 * 7e9, 8 * 7e9, 0.0)


def test_accelerate_config_flag_sets_the_sharding(tmp_path: Path) -> None:
    """The same preset under ZeRO stages 1..3 and 2..8 processes: memory per process only goes down."""
    def yaml_file(stage: int, processes: int) -> Path:
        path = tmp_path / f"z{stage}_{processes}.yaml"
        path.write_text(f"distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: {stage}\n"
                        f"mixed_precision: bf16\nnum_processes: {processes}\n")
        return path

    def gib(stage: int, processes: int) -> float:
        out = dry(tmp_path, "--preset", "paper", "--accelerate-config", str(yaml_file(stage, processes)))
        assert f"{processes} process(es), ZeRO-{stage}" in out
        return number(out, "memory    ≈")

    by_stage = [gib(z, 4) for z in (1, 2, 3)]
    assert by_stage == sorted(by_stage, reverse=True) and len(set(by_stage)) == 3
    assert gib(3, 2) > gib(3, 8)


def test_measured_means_of_a_resumed_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(load_config("paper").to_toml())
    rows = [{"step": s, "loss": 0.1, "seconds/step": 10.0 * s, "seconds/rollout": 4.0 * s, "web/cost_usd": 0.5,
             "tools/web_search_per_episode": 2.0, "tools/browse_webpage_per_episode": 1.0} for s in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["train", "--resume", str(run), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "over 2 logged step(s): 15.0 s a step (6.0 s rollouts" in result.output
    assert "$0.5000 a step, 3.00 tool calls an episode" in result.output
    assert sorted(p.name for p in run.iterdir()) == ["config.toml", "metrics.jsonl"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dry-run", "--set", "model=NoSuchOrg/NoSuchModel-1B"], "cannot read the config of model 'NoSuchOrg/NoSuchModel-1B'"),
        (["--dry-run", "--set", "model=/nonexistent/model-dir"], "no such directory"),
        (["--dry-run", "--set", f"model={Path(__file__).parent}"], "Should have a `model_type` key in its config.json"),
        (["--dry-run", "--accelerate-config", "/nonexistent.yaml"], "/nonexistent.yaml: not a usable accelerate config"),
        (["--accelerate-config", "x.yaml"], "--accelerate-config is read by --dry-run only"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["train", *args], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
