"""The `researchrl` command: ask, train, sft, eval, curate, report, and the offline sandbox web."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from researchrl import options
from researchrl.options import fail
from researchrl.environment import SEARCH_NAMES, EnvConfig

app = typer.Typer(
    help="Train and run deep-research agents (DeepResearcher, rebuilt).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()


def _mount() -> None:
    """Mount the commands that live in their own modules."""
    from researchrl.data.curate_cli import curate
    from researchrl.eval.cli import eval_command
    from researchrl.report.cli import report
    from researchrl.sandbox.cli import app as sandbox_app

    app.add_typer(sandbox_app, name="sandbox", help="The offline sandbox web (search API + page server on loopback).")
    app.command("eval")(eval_command)
    app.command("curate")(curate)
    app.command("report")(report)


_mount()


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question to research."),
    model: str = options.MODEL,
    base_url: Optional[str] = options.BASE_URL,
    api_key_env: str = options.API_KEY_ENV,
    tokenizer: Optional[str] = options.TOKENIZER,
    search: str = typer.Option("sandbox", help=f"Search backend: {' | '.join(SEARCH_NAMES)}."),
    search_url: Optional[str] = options.SEARCH_URL,
    corpus: Optional[Path] = typer.Option(None, help="JSONL/parquet corpus for --search local."),
    reader: str = typer.Option("extractive", help="Browsing reader: extractive (no LLM) | llm."),
    reader_url: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL of the reader LLM (--reader llm)."),
    reader_model: str = typer.Option("qwen-plus", help="Reader model name (--reader llm)."),
    web: str = options.WEB,
    cache: Optional[str] = options.CACHE,
    protocol: str = typer.Option("deepresearcher", help="Turn protocol: deepresearcher | search_r1."),
    max_turns: int = options.MAX_TURNS,
    max_new_tokens: int = options.MAX_NEW_TOKENS,
    temperature: float = options.TEMPERATURE,
    gold: list[str] = typer.Option([], help="Gold answer(s) to score against; repeat the flag for aliases."),
    threads: Optional[int] = options.THREADS,
    save: Optional[Path] = typer.Option(None, help="Also write the trajectory as JSON to this file."),
) -> None:
    """Run one research episode and print every turn: think, tool calls, observations, answer."""
    from researchrl.agent.loop import AgentConfig
    from researchrl.policy.base import Sampling

    if protocol not in ("deepresearcher", "search_r1"):
        raise fail(f"--protocol must be deepresearcher or search_r1, not {protocol!r}")
    try:
        env = EnvConfig(
            search=search,  # type: ignore[arg-type]
            search_url=search_url,
            corpus=corpus,
            reader=reader,  # type: ignore[arg-type]
            reader_url=reader_url,
            reader_model=reader_model,
            web=web,  # type: ignore[arg-type]
            cache=cache,
        )
    except ValueError as err:
        raise fail(str(err)) from None
    cfg = AgentConfig(
        protocol=protocol, max_turns=max_turns, sampling=Sampling(temperature=temperature, max_new_tokens=max_new_tokens)
    )
    try:
        trajectory, web = asyncio.run(_ask(question, gold, model, base_url, api_key_env, tokenizer, threads, env, cfg))
    except Exception as err:  # noqa: BLE001 - only known user/environment errors are shown as one line
        message = _user_error(err)
        if message is None:
            raise
        raise fail(message) from None
    from researchrl.display import print_trajectory, web_summary

    print_trajectory(console, trajectory)
    console.print(web_summary(web))
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(json.dumps(asdict(trajectory), default=str, indent=1))
        console.print(f"saved {save}")


async def _ask(question, gold, model, base_url, api_key_env, tokenizer, threads, env, cfg):  # noqa: ANN001, ANN202
    """Load the policy, open the environment, run the episode, close everything; the episode and what the web cost."""
    from researchrl.agent.loop import run_episode
    from researchrl.environment import open_environment
    from researchrl.types import Question

    golds = tuple(gold) or _known_answers(question)
    policy = _policy(model, base_url, api_key_env, tokenizer, threads)
    try:
        async with open_environment(env, cfg.protocol) as tools:
            with console.status("researching…"):
                trajectory = await run_episode(Question("ask", question, golds), policy, tools, cfg)
            return trajectory, tools.ledger.metrics()
    finally:
        await policy.aclose()


def _policy(model: str, base_url: str | None, api_key_env: str, tokenizer: str | None, threads: int | None):  # noqa: ANN202
    """An OpenAI-compatible policy when --base-url is given, else a local transformers model."""
    if base_url:
        from researchrl.policy.openai import OpenAIPolicy

        return OpenAIPolicy(base_url, model, api_key_env=api_key_env, tokenizer=tokenizer)
    from researchrl.policy.hf import HFPolicy

    with console.status(f"loading {model}…"):
        return HFPolicy.load(model, threads=threads)


def _known_answers(question: str) -> tuple[str, ...]:
    """Gold answers when the question is one of the sandbox's own questions (so the reward can be shown)."""
    from researchrl.data.load import load_questions
    from researchrl.sandbox.config import shared_data_dir

    path = shared_data_dir() / "wiki" / "questions.jsonl"
    if not path.exists():
        return ()
    wanted = question.strip().lower()
    for q in load_questions(path):
        if q.question.strip().lower() == wanted:
            return q.answers
    return ()


@app.command()
def train(
    preset: str = typer.Option("cpu", help="Preset: cpu (fits a 2-core laptop in ~30 min) | paper (Qwen2.5-7B, 8 GPUs, not run here)."),
    config: Optional[Path] = typer.Option(None, help="JSON file of config overrides (keys of TrainConfig)."),
    set_: list[str] = typer.Option([], "--set", help="Override one config key, e.g. --set max_steps=8 (repeatable)."),
    output_dir: Path = typer.Option(Path("runs"), help="Where the timestamped run directory is created."),
    resume: Optional[Path] = typer.Option(None, help="Resume this run directory: finished phases are skipped, GRPO continues from its last checkpoint."),
) -> None:
    """The main job: evaluate, warm up on expert trajectories, train with GRPO, evaluate; all in one run directory."""
    import time

    from researchrl.rl.config import TrainConfig, load_config, parse_sets

    try:
        if resume is not None:
            saved = resume / "config.json"
            if not saved.exists():
                raise FileNotFoundError(f"{saved} not found: --resume needs a run directory made by researchrl train")
            cfg = TrainConfig().with_overrides(json.loads(saved.read_text())).with_overrides(parse_sets(set_))
            run_dir = resume
        else:
            cfg = load_config(preset, config, {**parse_sets(set_), "output_dir": str(output_dir)})
            run_dir = cfg.output_dir / time.strftime("%Y%m%d-%H%M%S")
    except (ValueError, FileNotFoundError) as err:
        raise fail(str(err)) from None
    if cfg.preset == "paper":
        console.print("[yellow]the paper preset needs GPUs and a vLLM server: see README 'Scaling out' for the launch command[/]")
    from researchrl.rl.train import train as run_training

    console.print(f"run directory: [bold]{run_dir}[/]")
    try:
        results = run_training(cfg, run_dir, say=lambda line: console.print(f"[cyan]▸[/] {line}"))
    except Exception as err:  # noqa: BLE001
        message = _user_error(err)
        if message is None:
            raise
        raise fail(message) from None
    console.print_json(json.dumps(results))
    console.print(f"done: {run_dir}/eval.json, {run_dir}/curves.png, {run_dir}/metrics.jsonl")
    console.print(f"one page with everything: researchrl report {run_dir}")


@app.command()
def sft(
    out: Path = typer.Option(..., help="Run directory for the warm-up (the model is written to OUT/sft/model)."),
    model: str = typer.Option("embedded", help="Model to warm up: HF path/directory or 'embedded'."),
    data: Optional[Path] = typer.Option(None, help="Token rows JSONL (input_ids + labels, e.g. a run's sft/demonstrations.jsonl); default: the scripted expert on the sandbox."),
    examples: int = typer.Option(32, min=1, help="Expert trajectories to keep (scripted expert only)."),
    epochs: float = typer.Option(1.0, min=0.01, help="Passes over the demonstrations."),
    learning_rate: float = typer.Option(5e-5, min=0.0, help="SFT learning rate."),
) -> None:
    """Warm-up alone: supervised fine-tuning on expert trajectories, loss on policy tokens only."""
    from researchrl.rl.config import TrainConfig
    from researchrl.rl.train import Run

    cfg = TrainConfig().with_overrides({"model": model, "sft_examples": examples, "sft_epochs": epochs,
                                        "sft_learning_rate": learning_rate})
    try:
        if data is not None:
            from researchrl.rl.sft import read_rows, write_rows

            (out / "sft").mkdir(parents=True, exist_ok=True)
            write_rows(read_rows(data), out / "sft" / "demonstrations.jsonl")
        path = Run(cfg, out, say=lambda line: console.print(f"[cyan]▸[/] {line}")).warm_up_from(model)
    except Exception as err:  # noqa: BLE001
        message = _user_error(err)
        if message is None:
            raise
        raise fail(message) from None
    console.print(f"warmed-up model: {path}")


def _user_error(err: Exception) -> str | None:
    """The one-line message for errors a user can fix (keys, endpoints, paths, flags); None for bugs."""
    from researchrl.eval.judge import JudgeAuthError
    from researchrl.policy.openai import PolicyUnavailable
    from researchrl.rl.train import BudgetStop
    from researchrl.search.base import SearchError
    from researchrl.web.cached import ReplayMiss

    if isinstance(err, (PolicyUnavailable, SearchError, FileNotFoundError, ValueError, ReplayMiss, JudgeAuthError, BudgetStop)):
        return str(err)
    if isinstance(err, (ImportError, RuntimeError)) and "pip install" in str(err):
        return str(err)
    return None


if __name__ == "__main__":
    app()
