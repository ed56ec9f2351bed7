"""The `researchrl` command: ask, train, sft, eval, curate, report, and the offline sandbox web."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from researchrl import options
from researchrl.bounds import MAX_QUESTION_CHARS, check_size
from researchrl.errors import ConfigError, UserError
from researchrl.outputs import check_dir, check_file, removed_on_failure

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
    from researchrl.serve.cli import app as serve_app

    app.add_typer(sandbox_app, name="sandbox", help="The offline sandbox web (search API + page server on loopback).")
    app.add_typer(serve_app, name="serve", help="Serve the research agent (OpenAI chat API) or its tools (MCP).")
    app.command("eval")(eval_command)
    app.command("curate")(curate)
    app.command("report")(report)


_mount()



@app.command()
def ask(
    ctx: typer.Context,
    question: Optional[str] = typer.Argument(None, help="The question to research (or --file for many)."),
    model: str = options.MODEL,
    base_url: Optional[str] = options.BASE_URL,
    api_key_env: str = options.API_KEY_ENV,
    tokenizer: Optional[str] = options.TOKENIZER,
    run: Optional[Path] = options.RUN,
    phase: str = options.PHASE,
    config: Optional[Path] = options.CONFIG,
    set_: list[str] = options.SET,
    search: str = options.SEARCH,
    search_url: Optional[str] = options.SEARCH_URL,
    corpus: Optional[Path] = options.CORPUS,
    reader: str = options.READER,
    reader_url: Optional[str] = options.READER_URL,
    reader_model: str = options.READER_MODEL,
    reader_max_tokens: Optional[int] = options.READER_MAX_TOKENS,
    web: str = options.WEB,
    cache: Optional[str] = options.CACHE,
    protocol: str = options.PROTOCOL,
    max_turns: int = options.MAX_TURNS,
    max_new_tokens: int = options.MAX_NEW_TOKENS,
    max_context_tokens: Optional[int] = options.MAX_CONTEXT_TOKENS,
    temperature: float = options.TEMPERATURE,
    gold: list[str] = typer.Option([], help="Gold answer(s) to score against; repeat the flag for aliases."),
    threads: Optional[int] = options.THREADS,
    bf16: Optional[bool] = options.BF16,
    save: Optional[Path] = typer.Option(None, help="Also write the trajectory as JSON to this file (one question only)."),
    file_: Optional[Path] = typer.Option(None, "--file", help='A .jsonl of questions to answer in a batch: {"question": ...} a line, optional "id" and gold "answers"; needs --out.'),
    out: Optional[Path] = typer.Option(None, help="With --file: the answers, a JSON line per question as each ends; rerun to resume (settings in OUT.config.json)."),
    concurrency: int = typer.Option(16, min=1, help="With --file: questions in flight (a local model batches their turns)."),
) -> None:
    """Run one research episode and print every turn: think, tool calls, observations, answer (--file: a batch to JSONL)."""
    from researchrl.resolve import EPISODE_FLAGS, resolve_flags

    with options.exit_on_known():
        if (question is None) == (file_ is None):
            raise UserError("give a question or --file" + (", not both" if question is not None else ""))
        if (file_ is None) != (out is None):
            raise UserError("--file and --out go together: the questions, and the file their answers go to")
        if file_ is not None and (save is not None or gold):
            raise UserError("--save and --gold are for one question: with --file, golds come from the file, answers go to --out")
        if question is not None:
            check_size("the question", len(question), MAX_QUESTION_CHARS)
        if save is not None:
            check_file(save, "--save")  # before the episode, so its result is not lost
        if protocol not in ("deepresearcher", "search_r1"):
            raise ConfigError(f"--protocol must be deepresearcher or search_r1, not {protocol!r}")
        chosen = resolve_flags(ctx, EPISODE_FLAGS, run, phase, config, set_, model)
        decode_bf16 = options.local_bf16(bf16, base_url, chosen.run.eval_bf16 if chosen.run else None)
        if file_ is not None:
            from researchrl.answers import AnswerJob, answer_file

            job = AnswerJob(file_, out, chosen.model, chosen.agent, chosen.env, concurrency, decode_bf16)  # type: ignore[arg-type]
            outcome = answer_file(job, base_url, api_key_env, tokenizer, threads)
        else:
            trajectory, spend = asyncio.run(
                _ask(question, gold, chosen.model, base_url, api_key_env, tokenizer, threads, chosen.env, chosen.agent, decode_bf16)
            )
    from researchrl.display import print_trajectory, web_summary
    from researchrl.web.redact import scrub

    if file_ is not None:
        console.print(web_summary(outcome.web))
        console.print(f"answers: {out} ({outcome.written} written now, {outcome.earlier} from before, of {outcome.total})", soft_wrap=True)
        return
    print_trajectory(console, trajectory)
    console.print(web_summary(spend))
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        saved = {**asdict(trajectory), "exact_tokens": trajectory.exact_tokens}
        save.write_text(json.dumps(scrub(saved), default=str, indent=1))  # no key, even one a provider echoed
        console.print(f"saved {save}")


async def _ask(question, gold, model, base_url, api_key_env, tokenizer, threads, env, cfg, bf16):  # noqa: ANN001, ANN202
    """Load the policy, open the environment, run the episode, close everything; the episode and what the web cost."""
    from researchrl.agent.loop import run_episode
    from researchrl.environment import open_environment
    from researchrl.types import Question

    golds = tuple(gold) or _known_answers(question)
    policy = _policy(model, base_url, api_key_env, tokenizer, threads, bf16=bf16)
    try:
        async with open_environment(env, cfg.protocol) as tools:
            with console.status("researching…"):
                trajectory = await run_episode(Question("ask", question, golds), policy, tools, cfg)
            return trajectory, tools.ledger.metrics()
    finally:
        await policy.aclose()


def _policy(model: str, base_url: str | None, api_key_env: str, tokenizer: str | None, threads: int | None,
            max_batch: int = 16, bf16: bool = False):  # noqa: ANN202
    """An OpenAI-compatible policy when --base-url is given, else a local transformers model."""
    if base_url:
        from researchrl.policy.openai import OpenAIPolicy

        return OpenAIPolicy(base_url, model, api_key_env=api_key_env, tokenizer=tokenizer)
    from researchrl.policy.hf import HFPolicy

    with console.status(f"loading {model}…"):
        return HFPolicy.load(model, threads=threads, max_batch=max_batch, bf16=bf16)


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
    ctx: typer.Context,
    preset: str = typer.Option("cpu", help="Preset (researchrl/configs/NAME.toml): cpu (a 2-core laptop, 16-41 min measured by CPU and seed) | paper (Qwen2.5-7B on GPUs, not run here) | paper-mini (paper's code paths with the embedded model: vLLM, LLM reader; run it as 2 processes)."),
    config: Optional[Path] = options.CONFIG,
    set_: list[str] = options.SET,
    output_dir: Optional[Path] = typer.Option(None, help="Where the timestamped run directory is created (default: the config's output_dir, runs/)."),
    resume: Optional[Path] = typer.Option(None, help="Resume this run directory with its saved config.toml: finished phases are skipped, GRPO continues from its last checkpoint; --set may change only budgets, pacing and max_steps."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print parameters, tokens, memory per process, tool calls, USD and tool time of one step, then exit: no weights loaded, no run directory (with --resume: also the run's measured means)."),
    accelerate_config: Optional[Path] = typer.Option(None, help="With --dry-run: the accelerate config file (processes, ZeRO stage) the memory estimate assumes; default configs/accelerate_zero3_8gpu.yaml for the paper preset, else one process."),
) -> None:
    """The main job: evaluate, warm up on expert trajectories, train with GRPO, evaluate; all in one run directory."""
    import time

    from researchrl.config import parse_sets
    from researchrl.rl import ranks
    from researchrl.rl.config import load_config, resume_config
    from researchrl.rl.train import train as run_training

    with options.exit_on_known():
        overrides = parse_sets(set_)
        if resume is not None:
            from researchrl.resolve import given

            if given(ctx, ["preset", "config", "output_dir"]):
                raise ConfigError("--resume reloads the run's own config.toml: drop --preset/--config/--output-dir")
            cfg, run_dir = resume_config(resume, overrides), resume
        else:
            if output_dir is not None:
                overrides = {**overrides, "output_dir": str(output_dir)}
            cfg = load_config(preset, config, overrides)
            check_dir(cfg.output_dir, "--output-dir")
            run_dir = cfg.output_dir / ranks.broadcast(time.strftime("%Y%m%d-%H%M%S"))  # main's clock names it for every process
        if dry_run:
            from rich.markup import escape

            from researchrl.rl.dryrun import dry_run as estimate, render

            console.print(escape(render(estimate(cfg, accelerate_config, resume))), soft_wrap=True, highlight=False)
            return
        if accelerate_config is not None:
            raise ConfigError("--accelerate-config is read by --dry-run only; to train, pass it to accelerate launch --config_file")
        if cfg.preset == "paper":
            console.print("[yellow]the paper preset needs GPUs and a vLLM server: see README 'Scale out' for the launch command[/]")
        console.print(f"run directory: [bold]{run_dir}[/]")
        # a run that fails before any phase wrote a result leaves no directory (only main writes it)
        with removed_on_failure(run_dir, {"config.toml"}) if ranks.is_main() else contextlib.nullcontext():
            results = run_training(cfg, run_dir, say=lambda line: console.print(f"[cyan]▸[/] {line}"))
    if not ranks.is_main():  # every process printed its run directory; the summary once
        return
    console.print_json(json.dumps(results))
    console.print(f"done: {run_dir}/eval.json, {run_dir}/curves.png, {run_dir}/metrics.jsonl")
    console.print(f"one page with everything: researchrl report {run_dir}")
    console.print(f"evaluate it on other questions, as it trained: researchrl eval --run {run_dir} --data FILE")


@app.command()
def sft(
    out: Path = typer.Option(..., help="Run directory for the warm-up (the model is written to OUT/sft/model)."),
    model: str = typer.Option("embedded", help="Model to warm up: HF path/directory or 'embedded'."),
    data: Optional[Path] = typer.Option(None, help="Token rows JSONL (input_ids + labels, e.g. a run's sft/demonstrations.jsonl); default: the scripted expert on the configured environment."),
    preset: str = typer.Option("cpu", help="Preset whose env and agent sections the scripted expert runs with: cpu | paper."),
    config: Optional[Path] = options.CONFIG,
    set_: list[str] = options.SET,
    examples: int = typer.Option(32, min=1, help="Expert trajectories to keep (scripted expert only)."),
    epochs: float = typer.Option(1.0, min=0.01, help="Passes over the demonstrations."),
    learning_rate: float = typer.Option(5e-5, min=0.0, help="SFT learning rate."),
) -> None:
    """Warm-up alone: supervised fine-tuning on expert trajectories, loss on policy tokens only."""
    from researchrl.config import layered, parse_sets
    from researchrl.rl.config import load_config
    from researchrl.rl.train import Run

    with options.exit_on_known():
        flags = {"model": model, "sft_examples": examples, "sft_epochs": epochs, "sft_learning_rate": learning_rate}
        cfg = load_config(preset, config, layered(flags, parse_sets(set_)))
        if data is not None:
            from researchrl.rl.sft import read_rows, write_rows

            (out / "sft").mkdir(parents=True, exist_ok=True)
            write_rows(read_rows(data), out / "sft" / "demonstrations.jsonl")
        path = Run(cfg, out, say=lambda line: console.print(f"[cyan]▸[/] {line}")).warm_up_from(cfg.model)
    console.print(f"warmed-up model: {path}")


if __name__ == "__main__":
    app()
