"""TrainConfig: presets, overrides, the mapping onto GRPOConfig, and the data TRL receives from us."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from researchrl.config import flatten, merge, parse_sets, to_dict
from researchrl.errors import ConfigError
from researchrl.rl.config import PRESETS, TrainConfig, checkpointing_flag, load_config, load_run_config, preset_path, resume_config
from researchrl.rl.rollout import sample_indices, to_trl
from researchrl.rl.sft import read_rows, sft_rows, write_rows
from researchrl.types import Answer, Question, RewardBreakdown, Trajectory, Turn


def test_paper_preset_has_the_papers_settings() -> None:
    cfg = load_config("paper")
    assert (cfg.group_size, cfg.questions_per_step, cfg.learning_rate, cfg.beta, cfg.epsilon) == (16, 256, 1e-6, 0.001, 0.2)
    assert (cfg.agent.sampling.temperature, cfg.agent.max_turns, cfg.agent.sampling.max_new_tokens, cfg.env.top_k) == (1.0, 10, 2000, 10)
    assert (cfg.env.search, cfg.env.reader, cfg.env.snippet_chars, cfg.env.segment_chars) == ("serper", "llm", None, 1024 * 5 * 8)
    assert cfg.model == "Qwen/Qwen2.5-7B-Instruct" and cfg.use_vllm and cfg.bf16


@pytest.mark.parametrize("preset", PRESETS)
def test_every_setting_is_in_each_preset_with_a_comment(preset: str) -> None:
    """Like TRL's GRPOConfig: each field documented where users read it; an unset one appears commented out."""
    text = preset_path(preset).read_text()
    documented = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]") + "."
        elif "=" in line and not line.startswith("# ") or line.startswith("# ") and " = " in line.split("#")[1]:
            key = line.lstrip("# ").split("=")[0].strip()
            documented[section + key] = line
    wanted = set(flatten(to_dict(TrainConfig()))) | {"questions", "threads", "use_vllm", "amp", "eval_bf16", "fused_lm_head", "vllm_server_base_url", "vllm_bin", "env.search_url",
                                                     "env.corpus", "env.reader_url", "env.cache", "env.search_qps",
                                                     "env.step_budget_usd", "env.run_budget_usd", "env.ray_address"}
    wanted = {k for k in wanted if not k.startswith("env.prices")}
    assert wanted <= set(documented), sorted(wanted - set(documented))
    for key, line in documented.items():
        assert " # " in line.lstrip("# "), f"{preset}.toml: {key} has no comment"


def test_saved_config_round_trips_and_resume_refuses_unsafe_changes(tmp_path) -> None:  # noqa: ANN001
    cfg = load_config("cpu", overrides=parse_sets(["env.reader=llm", "env.failover=brave", "env.prices=serper=0.002",
                                                    "agent.sampling.max_new_tokens=64", "threads=none"]))
    (tmp_path / "config.toml").write_text(cfg.to_toml())
    assert load_run_config(tmp_path) == cfg
    resumed = resume_config(tmp_path, parse_sets(["env.run_budget_usd=2.5", "max_steps=9"]))
    assert (resumed.env.run_budget_usd, resumed.max_steps, resumed.env.reader) == (2.5, 9, "llm")
    with pytest.raises(ConfigError, match="agent.max_turns cannot change mid-run"):
        resume_config(tmp_path, parse_sets(["agent.max_turns=9"]))


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["bogus=1"], "unknown setting 'bogus'; valid here: amp, beta"),
        (["top_k=3"], "unknown setting 'top_k' (did you mean env.top_k?)"),
        (["moon.x=1"], "unknown section [moon]; valid here: amp, beta"),
        (["env.moon=1"], "unknown setting 'env.moon'; valid here: breaker_cooldown"),
        (["env=1"], "env is a section"),
        (["env.reader=gpt"], "env.reader must be one of extractive, llm, not 'gpt'"),
        (["max_steps=many"], "max_steps expects an integer, got 'many'"),
        (["agent.sampling.temperature=hot"], "agent.sampling.temperature expects a number"),
        (["gradient_checkpointing=maybe"], "gradient_checkpointing expects true or false"),
        (["group_size=0"], "group_size must be at least 1, got 0"),
        (["max_steps"], "--set expects section.key=value"),
    ],
)
def test_config_mistakes_are_one_line_errors_naming_the_choices(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("cpu", overrides=parse_sets(sets))
    assert message in str(err.value) and "\n" not in str(err.value)
    if "valid here" in message:
        assert str(err.value).endswith("sections: [agent], [env]") or "sections: [env.fetch], [env.search_retry]" in str(err.value)


def test_every_numeric_setting_has_a_range_and_the_defaults_are_in_it() -> None:
    import functools
    import typing

    from researchrl.bounds import RANGES, check_range

    def numeric(kind: object) -> bool:
        return bool({int, float} & {kind, *typing.get_args(kind), *(a for t in typing.get_args(kind) for a in typing.get_args(t))})

    assert {key for key, kind in _setting_types(TrainConfig).items() if numeric(kind)} == set(RANGES)
    for key in RANGES:
        check_range(key, functools.reduce(getattr, key.split("."), TrainConfig()))


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["micro_batch=0"], "micro_batch must be at least 1, got 0"),
        (["env.search_timeout=0"], "env.search_timeout must be above 0, got 0.0"),
        (["env.fetch.retry.jitter=1.5"], "env.fetch.retry.jitter must be between 0 and 1, got 1.5"),
        (["agent.sampling.top_p=0"], "agent.sampling.top_p must be above 0 and at most 1, got 0.0"),
        (["env.prices=serper=-1"], "env.prices must be at least 0, got -1.0"),
    ],
)
def test_numbers_out_of_range_are_one_line_errors(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}$".replace(".", r"\.")):
        load_config("cpu", overrides=parse_sets(sets))


def _setting_types(cls: type, prefix: str = "") -> dict[str, object]:
    """Every setting below `cls` by dotted key, with its type."""
    import dataclasses

    from researchrl.config import settings_of

    out: dict[str, object] = {}
    for key, kind in settings_of(cls).items():
        out.update(_setting_types(kind, f"{prefix}{key}.") if dataclasses.is_dataclass(kind) else {prefix + key: kind})
    return out


def test_unknown_presets_and_bad_files_are_errors(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="unknown preset 'gpu': choose cpu, paper, paper-mini"):
        load_config("gpu")
    (tmp_path / "bad.toml").write_text("max_steps = \n")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        load_config("cpu", tmp_path / "bad.toml")
    (tmp_path / "typed.toml").write_text('max_steps = "7"\n[env]\ntop_k = 2.5\n')
    with pytest.raises(ConfigError, match="env.top_k expects an integer, got 2.5"):
        load_config("cpu", tmp_path / "typed.toml")


def test_file_then_command_line_values_are_typed(tmp_path) -> None:  # noqa: ANN001
    file = tmp_path / "cfg.toml"
    file.write_text("group_size = 8\n[agent]\nmax_turns = 6\n[env.fetch.retry]\nattempts = 2\n")
    cfg = load_config("cpu", file, parse_sets(["max_steps=7", "learning_rate=2e-6", "bf16=true", "threads=none", "env.top_k=5"]))
    assert (cfg.group_size, cfg.max_steps, cfg.learning_rate, cfg.bf16, cfg.threads) == (8, 7, 2e-6, True, None)
    assert (cfg.agent.max_turns, cfg.env.top_k, cfg.env.fetch.retry.attempts, cfg.env.snippet_chars) == (6, 5, 2, 160)


def test_grpo_args_make_one_optimizer_step_per_generation_batch(tmp_path) -> None:  # noqa: ANN001
    pytest.importorskip("trl")
    from researchrl.rl.grpo import grpo_args
    from researchrl.rl.rewards import REWARD_FUNCS

    cfg = merge(TrainConfig(), {"group_size": 4, "questions_per_step": 3, "micro_batch": 2})
    args = grpo_args(cfg, tmp_path)
    assert args.num_generations == 4 and args.per_device_train_batch_size == 2
    assert args.gradient_accumulation_steps == 6 and args.steps_per_generation == 6  # 12 rollouts / 2
    assert args.generation_batch_size == 12 and args.beta == cfg.beta and args.epsilon == cfg.epsilon
    assert args.reward_weights == [1.0] + [0.0] * (len(REWARD_FUNCS) - 1)
    with pytest.raises(ValueError, match="multiple of micro_batch"):
        grpo_args(merge(cfg, {"micro_batch": 5}), tmp_path)


def trajectory(mask: list[int], reward: float) -> Trajectory:
    q = Question("q", "Q?", ("a",))
    turn = Turn("<think>x</think><answer>a</answer>", [5, 6], [-0.1, -0.2], "eos", Answer("a"))
    breakdown = RewardBreakdown(reward, True, None, "a", max(reward, 0.0), 0.0)
    return Trajectory(q, [1, 2], [5, 6, 7][: len(mask)], mask, [-0.1, None, -0.3][: len(mask)], [turn], "answer", breakdown)


def test_to_trl_has_the_contract_keys_and_lengths() -> None:
    out = to_trl([trajectory([1, 0, 1], 1.0), trajectory([1, 0, 1], -1.0)])
    assert {"prompt_ids", "completion_ids", "logprobs", "env_mask"} <= set(out)
    assert out["env_mask"] == [[1, 0, 1], [1, 0, 1]] and out["logprobs"][0] == [-0.1, 0.0, -0.3]
    assert out["reward"] == [1.0, -1.0] and out["termination"] == ["answer", "answer"]
    assert all(len(v) == 2 for v in out.values())


def test_repeated_prompts_get_distinct_sample_indices() -> None:
    assert sample_indices(["a", "a", "a", "b", "b", "a"]) == [0, 1, 2, 0, 1, 3]


def test_sft_labels_only_policy_tokens(tmp_path) -> None:  # noqa: ANN001
    rows = sft_rows([trajectory([1, 0, 1], 1.0)])
    assert rows == [{"input_ids": [1, 2, 5, 6, 7], "labels": [-100, -100, 5, -100, 7]}]
    write_rows(rows, tmp_path / "d.jsonl")
    assert read_rows(tmp_path / "d.jsonl") == rows
    (tmp_path / "bad.jsonl").write_text('{"input_ids": [1, 2], "labels": [1]}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_rows(tmp_path / "bad.jsonl")


def test_unset_use_vllm_picks_vllm_where_its_cpu_engine_is_installed(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """The default rollout engine: vLLM when `vllm` is found (faster, bench/rollout.py), else transformers."""
    from researchrl.policy import vllm_server
    from researchrl.rl.vllm_sync import resolve_engine

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(vllm_server, "__file__", str(tmp_path / "src" / "researchrl" / "policy" / "vllm_server.py"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("RESEARCHRL_VLLM_BIN", raising=False)
    cfg = load_config("cpu")
    assert cfg.use_vllm is None
    assert resolve_engine(cfg).use_vllm is False  # nothing installed: transformers, no error
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "vllm").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "vllm").chmod(0o755)
    assert resolve_engine(cfg).use_vllm is True
    assert resolve_engine(merge(cfg, {"use_vllm": False})).use_vllm is False  # an explicit choice is kept
    assert resolve_engine(merge(cfg, {"vllm": "external", "vllm_server_base_url": "http://127.0.0.1:9"})).use_vllm is False


@pytest.mark.parametrize("on", [True, False])
def test_the_checkpointing_flag_reaches_trls_configs_without_a_deprecation_warning(on: bool, tmp_path: Path) -> None:
    trl = pytest.importorskip("trl")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers 5.24 warns on the old name
        for config in (trl.GRPOConfig, trl.SFTConfig):
            args = config(output_dir=str(tmp_path), use_cpu=True, report_to="none", bf16=False, **checkpointing_flag(on))
            assert args.gradient_checkpointing is on  # TRL defaults it to True; what the trainers read must follow
