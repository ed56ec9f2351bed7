"""The environment and agent that `ask` and `eval` run with, from the same two objects as training.

Base: a run's saved config (`--run RUN_DIR`, decoded greedily as the run's own evaluations were), a TOML file
(`--config`), or the defaults. Over it: the command's flags (with a base, only the flags the user typed), then
`--set env.key=value` / `--set agent.key=value`. What was set over a run's config is kept, for the record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from researchrl.agent.loop import AgentConfig
from researchrl.config import flatten, layered, merge, parse_sets, read_toml
from researchrl.environment import EnvConfig
from researchrl.errors import ConfigError, UserError
from researchrl.rl.config import TrainConfig, load_run_config

AGENT_FLAGS = {  # the agent flags ask and eval share -> the setting each sets
    "max_turns": "agent.max_turns", "max_new_tokens": "agent.sampling.max_new_tokens", "temperature": "agent.sampling.temperature",
    "max_context_tokens": "agent.max_context_tokens",
}
READER_FLAGS = {  # the reader flags ask, eval and serve share -> the setting each sets
    "reader": "env.reader", "reader_url": "env.reader_url", "reader_model": "env.reader_model",
    "reader_max_tokens": "env.reader_max_tokens",
}
EPISODE_FLAGS = {  # the flags of the commands that run episodes (ask, serve agent) -> the setting each sets
    "search": "env.search", "search_url": "env.search_url", "corpus": "env.corpus", **READER_FLAGS,
    "web": "env.web", "cache": "env.cache", "protocol": "agent.protocol", **AGENT_FLAGS,
}
PHASE_MODELS = {"before": None, "after_sft": "sft/model", "after": "grpo/model"}  # a run's model at each phase


@dataclass(frozen=True)
class Resolved:
    """What a command runs: environment, agent, model, and where they came from."""

    env: EnvConfig
    agent: AgentConfig
    model: str  # the run's model at the chosen phase, or --model
    run: TrainConfig | None = None  # the run's config, with --run
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted keys set over the base, as given


def given(ctx: typer.Context, names: list[str]) -> set[str]:
    """The parameters the user typed (not left at their defaults); by name, as typer may ship its own click."""
    sources = {name: ctx.get_parameter_source(name) for name in names}
    return {name for name, source in sources.items() if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")}


def applied(ctx: typer.Context, names: list[str], over_base: bool) -> set[str]:
    """The flags that set something: all of them over the defaults; over a run's config or a file, only those typed."""
    return given(ctx, names) if over_base else set(names)


def resolve_flags(
    ctx: typer.Context, flag_map: dict[str, str], run: Path | None, phase: str, config: Path | None, sets: list[str],
    model: str | None,
) -> Resolved:
    """`resolve` from a command's flags: `flag_map` from flag name to the setting it sets (the flags it lacks are skipped)."""
    from researchrl.config import nest

    values = {name: ctx.params[name] for name in flag_map if name in ctx.params}
    apply = applied(ctx, [*values, "model"], over_base=run is not None or config is not None)
    flags = {flag_map[name]: value for name, value in values.items() if value is not None and name in apply}
    return resolve(run, phase, config, nest(flags), sets, model if "model" in apply else None)


def phase_model(run_dir: Path, cfg: TrainConfig, phase: str) -> str:
    """The model a run evaluated at `phase` (before: the base model)."""
    if phase not in PHASE_MODELS:
        raise ConfigError(f"--phase must be one of {', '.join(PHASE_MODELS)}, not {phase!r}")
    relative = PHASE_MODELS[phase]
    if relative is None:
        return cfg.model
    path = run_dir / relative
    if not (path / "config.json").exists():
        raise UserError(f"{run_dir} has no model for phase {phase!r} ({path} not found): the run has not reached it")
    return str(path)


def resolve(
    run: Path | None, phase: str, config: Path | None, flags: dict[str, Any], sets: list[str], model: str | None
) -> Resolved:
    """Base config, then `flags` (nested {"env": {...}, "agent": {...}}), then --set; `model` overrides the run's."""
    if run is not None and config is not None:
        raise ConfigError("--run and --config both name a base config: give one")
    base_env, base_agent, cfg = EnvConfig(), AgentConfig(), None
    if run is not None:
        cfg = load_run_config(run)
        base_env, base_agent = cfg.env, cfg.greedy_agent()
        model = model or phase_model(run, cfg, phase)
    elif config is not None:
        loaded = merge(TrainConfig(), read_toml(config))
        base_env, base_agent = loaded.env, loaded.agent
    extra = parse_sets(sets)
    unknown = sorted(set(extra) - {"env", "agent"})
    if unknown:
        raise ConfigError(f"--set here takes env.* and agent.* settings, not {', '.join(unknown)}")
    settings = layered(flags, extra)
    env = merge(base_env, settings.get("env", {}), "env.")
    agent = merge(base_agent, settings.get("agent", {}), "agent.")
    overrides = {k: str(v) if isinstance(v, Path) else v for k, v in flatten(settings).items()} if cfg else {}
    return Resolved(env, agent, model or "embedded", cfg, overrides)
