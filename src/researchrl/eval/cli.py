"""`researchrl eval`: the benchmark runner on the command line (mounted by researchrl.cli)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer

from researchrl import options
from researchrl.agent.protocols import PROTOCOLS
from researchrl.environment import SEARCH_NAMES

ENVS = ("sandbox", "local", "web", "replay")


def eval_command(
    data: Path = typer.Option(..., help="Benchmark file: the paper's .parquet (veRL schema) or our .jsonl."),
    out: Path = typer.Option(..., help="Output directory: records.jsonl, tables.json/.md; rerun to resume."),
    model: str = options.MODEL,
    base_url: Optional[str] = options.BASE_URL,
    api_key_env: str = options.API_KEY_ENV,
    tokenizer: Optional[str] = options.TOKENIZER,
    env: str = typer.Option("sandbox", help=f"Environment: {' | '.join(ENVS)} (web: --search provider live; replay: only from --cache)."),
    search: str = typer.Option("serper", help=f"Search provider for --env web/replay: {' | '.join(SEARCH_NAMES[2:])}."),
    search_url: Optional[str] = options.SEARCH_URL,
    corpus: Optional[Path] = typer.Option(None, help="Corpus for --env local (default: the shared Wikipedia passages)."),
    web: str = options.WEB,
    cache: Optional[str] = options.CACHE,
    baseline: str = typer.Option("deepresearcher", help=f"What answers: {' | '.join(PROTOCOLS)} (cot: no tools; rag: top snippets in the prompt; no_browse: search only)."),
    k: int = typer.Option(1, min=1, help="Samples per question (avg@k, pass@k); k > 1 needs --temperature > 0."),
    temperature: float = options.TEMPERATURE,
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N questions of the file."),
    concurrency: int = typer.Option(16, min=1, help="Episodes in flight (a local model batches their turns)."),
    max_turns: int = options.MAX_TURNS,
    max_new_tokens: int = options.MAX_NEW_TOKENS,
    rag_k: int = typer.Option(5, min=1, help="Snippets the rag baseline puts in the prompt."),
    judge_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint of the MBE judge (no judge: MBE is left empty)."),
    judge_model: str = typer.Option("gpt-4o-mini", help="Judge model (the paper's: gpt-4o-mini)."),
    judge_key_env: str = typer.Option("JUDGE_API_KEY", help="Environment variable holding the judge's key."),
    threads: Optional[int] = options.THREADS,
    executor: str = typer.Option("local", help="Where search/fetch/read calls run: local | ray (a pool of Ray tool workers)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address for --executor ray (default: start a local Ray)."),
    ray_workers: int = typer.Option(2, min=1, help="Ray tool workers for --executor ray."),
) -> None:
    """Evaluate an agent or a baseline on a benchmark: F1, EM and MBE per data source, with the paper's figures beside them."""
    from researchrl.agent.loop import AgentConfig
    from researchrl.cli import _user_error, console
    from researchrl.options import fail
    from researchrl.environment import EnvConfig
    from researchrl.eval.benchmark import EvalJob, check_job
    from researchrl.policy.base import Sampling
    from researchrl.sandbox.config import shared_data_dir

    try:
        if env not in ENVS:
            raise ValueError(f"--env must be one of {', '.join(ENVS)}, not {env!r}")
        if baseline not in PROTOCOLS:
            raise ValueError(f"--baseline must be one of {', '.join(PROTOCOLS)}, not {baseline!r}")
        scale = {"executor": executor, "ray_address": ray_address, "ray_workers": ray_workers, "cache": cache}
        if env == "local":
            env_cfg = EnvConfig(search="local", corpus=corpus or shared_data_dir() / "wiki" / "passages.jsonl", web=web, **scale)  # type: ignore[arg-type]
        elif env == "sandbox":
            env_cfg = EnvConfig(search="sandbox", web=web, **scale)  # type: ignore[arg-type]
        else:
            env_cfg = EnvConfig(search=search, search_url=search_url, web="replay" if env == "replay" else web, **scale)  # type: ignore[arg-type]
        agent = AgentConfig(
            protocol=baseline, max_turns=max_turns, sampling=Sampling(temperature=temperature, max_new_tokens=max_new_tokens)
        )
        job = EvalJob(data=data, out=out, model=model, agent=agent, env=env_cfg, k=k, limit=limit,
                      concurrency=concurrency, rag_k=rag_k)
        check_job(job)  # report a bad flag or file before loading a model
        rows, web = asyncio.run(_run(job, model, base_url, api_key_env, tokenizer, threads, judge_url, judge_model, judge_key_env))
    except Exception as err:  # noqa: BLE001 - only known user/environment errors are shown as one line
        message = _user_error(err)
        if message is None:
            raise
        raise fail(message) from None
    from researchrl.display import web_summary
    from researchrl.eval.tables import reference_for, render_console_table

    console.print(render_console_table(rows, reference_for(rows)))
    console.print(web_summary(web))
    console.print(f"records and tables: {out}/records.jsonl, {out}/tables.md")


async def _run(job, model, base_url, api_key_env, tokenizer, threads, judge_url, judge_model, judge_key_env):  # noqa: ANN001, ANN202
    """Load the policy (and judge), run the benchmark with a progress bar, close everything."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from researchrl.cli import _policy
    from researchrl.eval.benchmark import run_benchmark
    from researchrl.eval.judge import Judge

    policy = _policy(model, base_url, api_key_env, tokenizer, threads)
    judge = Judge(judge_url, judge_model, api_key_env=judge_key_env) if judge_url else None
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
