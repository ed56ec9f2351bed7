"""`researchrl eval`: the benchmark runner on the command line (mounted by researchrl.cli)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Optional

import typer

from researchrl import options
from researchrl.agent.protocols import PROTOCOLS
from researchrl.environment import SEARCH_NAMES

ENVS = ("sandbox", "local", "web", "replay")


def eval_command(
    ctx: typer.Context,
    data: Optional[Path] = typer.Option(None, help="Benchmark file: the paper's .parquet (veRL schema) or our .jsonl (default with --run: the run's held-out questions)."),
    out: Optional[Path] = typer.Option(None, help="Output directory: records.jsonl, tables.json/.md; rerun to resume (default with --run: RUN/eval-PHASE)."),
    model: str = options.MODEL,
    base_url: Optional[str] = options.BASE_URL,
    api_key_env: str = options.API_KEY_ENV,
    tokenizer: Optional[str] = options.TOKENIZER,
    run: Optional[Path] = options.RUN,
    phase: str = options.PHASE,
    config: Optional[Path] = options.CONFIG,
    set_: list[str] = options.SET,
    env: str = typer.Option("sandbox", help=f"Environment: {' | '.join(ENVS)} (web: --search provider live; replay: only from --cache)."),
    search: str = typer.Option("serper", help=f"Search provider for --env web/replay: {' | '.join(SEARCH_NAMES[2:])}."),
    search_url: Optional[str] = options.SEARCH_URL,
    corpus: Optional[Path] = typer.Option(None, help="Corpus for --env local (default: the shared Wikipedia passages)."),
    reader: str = options.READER,
    reader_url: Optional[str] = options.READER_URL,
    reader_model: str = options.READER_MODEL,
    reader_max_tokens: Optional[int] = options.READER_MAX_TOKENS,
    web: str = options.WEB,
    cache: Optional[str] = options.CACHE,
    baseline: str = typer.Option("deepresearcher", help=f"What answers: {' | '.join(PROTOCOLS)} (cot: no tools; rag: top snippets in the prompt; no_browse: search only)."),
    k: int = typer.Option(1, min=1, help="Samples per question (avg@k, pass@k); k > 1 needs --temperature > 0."),
    temperature: float = options.TEMPERATURE,
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N questions of the file."),
    concurrency: int = typer.Option(16, min=1, help="Episodes in flight (a local model batches their turns)."),
    max_turns: int = options.MAX_TURNS,
    max_new_tokens: int = options.MAX_NEW_TOKENS,
    max_context_tokens: Optional[int] = options.MAX_CONTEXT_TOKENS,
    rag_k: int = typer.Option(5, min=1, help="Snippets the rag baseline puts in the prompt."),
    judge_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint of the MBE judge (no judge: MBE is left empty)."),
    judge_model: str = typer.Option("gpt-4o-mini", help="Judge model (the paper's: gpt-4o-mini)."),
    judge_key_env: str = typer.Option("JUDGE_API_KEY", help="Environment variable holding the judge's key."),
    judge_max_tokens: Optional[int] = typer.Option(None, min=1, help="Tokens per judge reply (default: no limit, as the paper)."),
    threads: Optional[int] = options.THREADS,
    bf16: Optional[bool] = options.BF16,
    executor: str = typer.Option("local", help="Where search/fetch/read calls run: local | ray (a pool of Ray tool workers)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address for --executor ray (default: start a local Ray)."),
    ray_workers: int = typer.Option(2, min=1, help="Ray tool workers for --executor ray."),
) -> None:
    """Evaluate an agent or a baseline on a benchmark: F1, EM and MBE per data source, with the paper's figures beside them."""
    from researchrl.cli import console
    from researchrl.config import nest
    from researchrl.errors import ConfigError
    from researchrl.eval.benchmark import EvalJob, check_job
    from researchrl.resolve import applied, resolve

    values = {"env": env, "search": search, "search_url": search_url, "corpus": corpus, "web": web, "cache": cache,
              "executor": executor, "ray_address": ray_address, "ray_workers": ray_workers, "baseline": baseline,
              "max_turns": max_turns, "max_new_tokens": max_new_tokens, "max_context_tokens": max_context_tokens,
              "temperature": temperature, "reader": reader,
              "reader_url": reader_url, "reader_model": reader_model, "reader_max_tokens": reader_max_tokens}
    typed = applied(ctx, [*values, "model"], over_base=run is not None or config is not None)
    with options.exit_on_known():
        if env not in ENVS:
            raise ConfigError(f"--env must be one of {', '.join(ENVS)}, not {env!r}")
        if baseline not in PROTOCOLS:
            raise ConfigError(f"--baseline must be one of {', '.join(PROTOCOLS)}, not {baseline!r}")
        chosen = resolve(run, phase, config, nest(_settings(values, typed)), set_, model if "model" in typed else None)
        heldout = None
        if run is not None and data is None:  # the run's own held-out questions, as its evaluations ran them
            data, heldout = chosen.run.questions, chosen.run.heldout  # type: ignore[union-attr]
            limit = limit or chosen.run.eval_questions  # type: ignore[union-attr]
            if not heldout:
                raise ConfigError(f"{run} held out no questions (heldout = 0): give --data")
        if data is None:
            raise ConfigError("--data is required (a .parquet or .jsonl QA file), unless --run names a run with held-out questions")
        if out is None:
            if run is None:
                raise ConfigError("--out is required (the output directory), unless --run is given")
            out = run / f"eval-{phase}"
        job = EvalJob(data=data, out=out, model=chosen.model, agent=chosen.agent, env=chosen.env, k=k, limit=limit,
                      concurrency=concurrency, rag_k=rag_k, heldout=heldout,
                      provenance={"run": str(run), "phase": phase, "overrides": chosen.overrides} if run else {},
                      endpoint=base_url or None, tokenizer=tokenizer,
                      bf16=options.local_bf16(bf16, base_url, chosen.run.eval_bf16 if chosen.run else None))
        check_job(job)  # report a bad flag or file before loading a model
        rows, spend = asyncio.run(_run(job, api_key_env, threads, judge_url, judge_model, judge_key_env, judge_max_tokens))
    from researchrl.display import web_summary
    from researchrl.eval.tables import reference_for, render_console_table

    console.print(render_console_table(rows, reference_for(rows)))
    console.print(web_summary(spend))
    console.print(f"records and tables: {out}/records.jsonl, {out}/tables.md")


def _settings(values: dict[str, Any], typed: set[str]) -> dict[str, Any]:
    """The flags the user gave as dotted settings (`--env` picks the search backend, its corpus or replay)."""
    from researchrl.resolve import AGENT_FLAGS, READER_FLAGS
    from researchrl.sandbox.config import shared_data_dir

    out: dict[str, Any] = {}
    if "env" in typed:
        kind = values["env"]
        if kind == "local":
            out.update({"env.search": "local", "env.corpus": values["corpus"] or shared_data_dir() / "wiki" / "passages.jsonl"})
        else:
            out["env.search"] = "sandbox" if kind == "sandbox" else values["search"]
    if "search" in typed and values["env"] in ("web", "replay"):
        out["env.search"] = values["search"]
    for name in ("search_url", "corpus", "cache", "ray_address"):
        if name in typed and values[name] is not None:
            out[f"env.{name}"] = values[name]
    for name in ("web", "executor", "ray_workers"):
        if name in typed:
            out[f"env.{name}"] = values[name]
    if values["env"] == "replay" and "env" in typed:
        out["env.web"] = "replay"
    flags = {"baseline": "agent.protocol", **AGENT_FLAGS, **READER_FLAGS}
    out.update({key: values[name] for name, key in flags.items() if name in typed and values[name] is not None})
    return out


async def _run(job, api_key_env, threads, judge_url, judge_model, judge_key_env, judge_max_tokens):  # noqa: ANN001, ANN202
    """Load the policy (and judge), run the benchmark with a progress bar, close everything."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from researchrl.cli import _policy
    from researchrl.eval.benchmark import run_benchmark
    from researchrl.eval.judge import Judge

    policy = _policy(job.model, job.endpoint, api_key_env, job.tokenizer, threads, max_batch=job.concurrency, bf16=job.bf16)
    judge = Judge(judge_url, judge_model, api_key_env=judge_key_env, max_tokens=judge_max_tokens) if judge_url else None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns) as progress:
            task = progress.add_task("episodes", total=None)
            _, rows, web = await run_benchmark(
                job, policy, judge, on_progress=lambda done, total: progress.update(task, completed=done, total=total)
            )
        return rows, web
    finally:
        await policy.aclose()
        if judge is not None:
            await judge.aclose()
