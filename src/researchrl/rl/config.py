"""TrainConfig: one flat, typed config with presets (`cpu`, `paper`), mapped onto TRL's GRPOConfig and SFTConfig."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from researchrl.sandbox.config import shared_data_dir


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of `researchrl train`; defaults are the `cpu` preset, paper values are named where they differ."""

    preset: str = "cpu"
    model: str = "embedded"  # HF path/dir or 'embedded' (SmolLM2-135M-Instruct); paper: Qwen/Qwen2.5-7B-Instruct
    questions: Path = field(default_factory=lambda: shared_data_dir() / "wiki" / "questions.jsonl")
    heldout: int = 12  # last N questions are held out for evaluation, never trained on
    eval_questions: int = 12  # how many held-out questions each evaluation point runs (greedy, 1 sample)
    output_dir: Path = Path("runs")  # a timestamped run directory is created inside
    seed: int = 0
    threads: int | None = None  # torch threads; default = the free cores
    # --- GRPO (paper values in comments) ---
    group_size: int = 4  # rollouts per question (paper: 16)
    questions_per_step: int = 2  # paper: 256
    max_steps: int = 4  # optimizer steps of GRPO (paper: ~30-35 shown)
    learning_rate: float = 1e-5  # paper: 1e-6 (a 135M model given 4 steps needs a larger step to move)
    beta: float = 0.001  # KL coefficient, k3 estimator (paper: 0.001)
    epsilon: float = 0.2  # clip range (paper: 0.2)
    temperature: float = 1.0  # rollout sampling temperature (paper: 1.0)
    loss_type: str = "dapo"  # token-level mean over the batch, like veRL's token-mean
    micro_batch: int = 1  # sequences per forward/backward (gradient accumulation covers the rest); 1 is fastest on CPU
    gradient_checkpointing: bool = True  # peak RSS 4.7 GB instead of 10.6 GB at G=8 (bench/train_step.py), and no slower
    save_steps: int = 2  # checkpoint every N GRPO steps (resume with --resume)
    # --- episodes ---
    max_turns: int = 4  # paper: 10
    max_new_tokens: int = 96  # per policy turn (paper: 2000)
    max_context_tokens: int = 4096  # paper: 32768
    top_k: int = 3  # search results per query (paper: 10)
    snippet_chars: int = 160  # search snippets cut to this many characters (paper: engine snippet)
    max_observation_chars: int = 700  # one observation is cut past this
    # --- warm-up (SFT on scripted expert trajectories) ---
    warmup: bool = True  # a 135M model needs it to emit tool calls at all; the paper (7B) trains without
    sft_examples: int = 32  # expert trajectories kept for the warm-up
    sft_epochs: float = 1.0
    sft_learning_rate: float = 5e-5
    # --- the environment (see EnvConfig) ---
    search: str = "sandbox"  # sandbox (offline) | serper | brave | searxng | tavily (paper: serper)
    web: str = "cache"  # live | cache | record | replay
    cache: str | None = None  # cache store: SQLite file | redis://... | memory (default: memory offline)
    search_qps: float | None = None  # requests/s per search provider, shared across processes by the cache store
    step_budget_usd: float | None = None  # spend cap per GRPO step (tools then answer with a budget observation)
    run_budget_usd: float | None = None  # spend cap per run: the run checkpoints and stops when reached
    executor: str = "local"  # local | ray (tool calls on a pool of Ray actors)
    ray_address: str | None = None  # Ray cluster address (None: a local Ray)
    ray_workers: int = 2  # Ray tool workers
    # --- scale-out (not used on CPU) ---
    use_vllm: bool = False
    vllm_server_base_url: str | None = None
    bf16: bool = False

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with fields replaced; an unknown key is an error naming the known ones."""
        known = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        typed = {k: _coerce(known[k].type, v) for k, v in overrides.items()}
        return dataclasses.replace(self, **typed)

    def to_json(self) -> str:
        """The resolved config as saved in the run directory."""
        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}, indent=2)


PAPER = dict(
    preset="paper",
    model="Qwen/Qwen2.5-7B-Instruct",
    heldout=0,
    group_size=16,
    questions_per_step=256,
    max_steps=312,
    learning_rate=1e-6,
    micro_batch=2,
    gradient_checkpointing=True,
    save_steps=1,
    max_turns=10,
    max_new_tokens=2000,
    max_context_tokens=32768,
    top_k=10,
    snippet_chars=100_000,
    max_observation_chars=100_000,
    warmup=False,
    use_vllm=True,
    bf16=True,
)

PRESETS: dict[str, dict[str, Any]] = {"cpu": {}, "paper": PAPER}


def load_config(preset: str = "cpu", file: Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Preset, then a JSON file of overrides, then --set key=value pairs; unknown keys and presets are errors."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose {' or '.join(PRESETS)}")
    cfg = TrainConfig().with_overrides(PRESETS[preset])
    if file is not None:
        try:
            data = json.loads(Path(file).read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read config file {file}: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"config file {file} must hold a JSON object")
        cfg = cfg.with_overrides(data)
    return cfg.with_overrides(overrides or {})


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """`key=value` strings from the command line."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _coerce(kind: Any, value: Any) -> Any:
    """Turn command-line strings into the field's type (bool, int, float, Path, optional str)."""
    if not isinstance(value, str):
        return value
    text = str(kind)  # annotations are strings here (postponed evaluation)
    try:
        if text == "bool":
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if text == "int":
            return int(value)
        if text == "float":
            return float(value)
        if text == "int | None":
            return None if value.lower() == "none" else int(value)
        if text == "str | None":
            return None if value.lower() == "none" else value
        if text == "float | None":
            return None if value.lower() == "none" else float(value)
        if text == "Path":
            return Path(value)
    except ValueError:
        raise ValueError(f"bad value {value!r} for a {text} setting") from None
    return value
