"""TrainConfig: the training knobs plus the environment (`[env]`) and the agent (`[agent]`) every command shares.

Presets are TOML files shipped in `researchrl/configs/` (`cpu.toml`, `paper.toml`), each field with a one-line
comment. A run resolves preset → `--config FILE.toml` → `--set section.key=value`, saves the result as the run's
`config.toml`, and reloads exactly that on `--resume`, where only the settings in SAFE_ON_RESUME may change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from researchrl.agent.loop import AgentConfig
from researchrl.config import changed_keys, merge, read_toml, to_toml
from researchrl.environment import EnvConfig
from researchrl.errors import ConfigError
from researchrl.sandbox.config import shared_data_dir

PRESETS = ("cpu", "paper", "paper-mini")
# what may change when a run resumes: spend, pacing and where work runs; never what defines the experiment
SAFE_ON_RESUME = frozenset({
    "threads", "max_steps", "save_steps", "env.step_budget_usd", "env.run_budget_usd", "env.search_qps",
    "env.executor", "env.ray_address", "env.ray_workers", "env.cache", "env.extract_workers",
})


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of `researchrl train`; the documented values live in the presets (`researchrl/configs/*.toml`)."""

    preset: str = "cpu"  # the preset this config started from (informational)
    model: str = "embedded"  # HF path/dir or 'embedded' (SmolLM2-135M-Instruct); paper: Qwen/Qwen2.5-7B-Instruct
    questions: Path = field(default_factory=lambda: shared_data_dir() / "wiki" / "questions.jsonl")
    heldout: int = 12  # last N questions are held out for evaluation, never trained on
    eval_questions: int = 12  # how many held-out questions each evaluation point runs (greedy, 1 sample)
    output_dir: Path = Path("runs")  # a timestamped run directory is created inside
    threads: int | None = None  # torch threads; default = the free cores
    group_size: int = 4  # rollouts per question (paper: 16)
    questions_per_step: int = 2  # paper: 256
    max_steps: int = 4  # optimizer steps of GRPO
    learning_rate: float = 1e-5  # paper: 1e-6
    beta: float = 0.001  # KL coefficient, k3 estimator (paper: 0.001)
    epsilon: float = 0.2  # clip range (paper: 0.2)
    loss_type: str = "dapo"  # token-level mean over the batch, like veRL's token-mean
    micro_batch: int = 1  # sequences per forward/backward (gradient accumulation covers the rest)
    gradient_checkpointing: bool = True  # recompute activations in the backward pass: less memory, 1.1-1.2x slower on CPU
    logprob_chunk: int | None = None  # vocabulary rows TRL's fused LM head projects at a time; None = TRL's 32768
    fused_lm_head: bool | None = None  # TRL's fused LM head (else the model's own, scored positions only); None: on a GPU
    reload_reference: bool = False  # KL reference weights read from disk for its pass, not held (the cpu preset: on)
    save_steps: int = 2  # checkpoint every N GRPO steps (resume with --resume)
    warmup: bool = True  # SFT on scripted expert trajectories before GRPO; the paper (7B) trains without
    sft_examples: int = 32  # expert trajectories kept for the warm-up
    sft_epochs: float = 1.0  # passes over them
    sft_learning_rate: float = 5e-5  # SFT learning rate
    use_vllm: bool | None = None  # rollouts on a vLLM server (see `vllm`); None: when vLLM's CPU engine is installed
    vllm: str = "managed"  # managed (researchrl starts and stops vLLM; CPU) | external (vllm_server_base_url)
    vllm_server_base_url: str | None = None  # external server: `trl vllm-serve` on GPUs; on CPU see README
    vllm_bin: str | None = None  # the `vllm` executable of a managed server; unset = .venv-vllm (scripts/vllm.sh), then PATH
    vllm_sync_tolerance: float = 1e-3  # CPU sync: largest server-vs-trainer logprob gap on the probe sequence
    bf16: bool = False  # bfloat16 weights and compute (GPUs)
    amp: bool | None = None  # bf16 autocast in training's forward/backward over fp32 weights; None: on a CPU with native bf16
    eval_bf16: bool | None = None  # held-out evaluations decode a bfloat16 copy of the model; None: when amp or bf16 is on
    env: EnvConfig = field(default_factory=EnvConfig)  # the search engine, pages and reader of every episode
    agent: AgentConfig = field(default_factory=AgentConfig)  # turn budgets, decoding and reward of every episode

    def __post_init__(self) -> None:  # numeric ranges: bounds.RANGES, checked as settings are merged
        if self.vllm not in ("managed", "external"):
            raise ConfigError(f"vllm must be managed or external, got {self.vllm!r}")
        if self.use_vllm and self.vllm == "external" and not self.vllm_server_base_url:
            raise ConfigError("vllm = external needs vllm_server_base_url (the running server's address)")

    def to_toml(self) -> str:
        """The resolved config as saved in the run directory."""
        return to_toml(self, "The resolved config of this run: `researchrl train --resume RUN_DIR` reloads it.")

    def greedy_agent(self) -> AgentConfig:
        """The agent for evaluation: the run's settings, decoded greedily (the paper's evaluation)."""
        return dataclasses.replace(self.agent, sampling=dataclasses.replace(self.agent.sampling, temperature=0.0))


def preset_path(name: str) -> Path:
    """The TOML file of a shipped preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose {', '.join(PRESETS)}")
    return Path(str(resources.files("researchrl") / "configs" / f"{name}.toml"))


def load_config(preset: str = "cpu", file: Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Preset, then a TOML file, then --set overrides (nested mappings); every key and value checked."""
    cfg = merge(TrainConfig(), read_toml(preset_path(preset)))
    if file is not None:
        cfg = merge(cfg, read_toml(file))
    return merge(cfg, overrides or {})


def load_run_config(run_dir: Path) -> TrainConfig:
    """The config a run was made with (its config.toml)."""
    saved = run_dir / "config.toml"
    if saved.exists():
        return merge(TrainConfig(), read_toml(saved))
    if (run_dir / "config.json").exists():
        raise ConfigError(f"{run_dir} was made by an older researchrl (config.json, not config.toml); start a new run")
    raise ConfigError(f"{saved} not found: expected a run directory made by researchrl train")


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> TrainConfig:
    """A run's saved config with the --set overrides that are safe to change on resume; any other change is refused."""
    saved = load_run_config(run_dir)
    cfg = merge(saved, overrides)
    unsafe = [key for key in changed_keys(saved, cfg) if key not in SAFE_ON_RESUME]
    if unsafe:
        raise ConfigError(
            f"--resume keeps the run's settings; {', '.join(unsafe)} cannot change mid-run "
            f"(safe to change: {', '.join(sorted(SAFE_ON_RESUME))}); start a new run instead"
        )
    return cfg


def checkpointing_flag(on: bool) -> dict[str, bool]:
    """TrainingArguments' activation-recompute flag under this transformers' name: 5.24 renamed it and warns on the old."""
    from transformers import TrainingArguments

    new = "activation_checkpointing" in TrainingArguments.__dataclass_fields__
    return {"activation_checkpointing" if new else "gradient_checkpointing": on}
