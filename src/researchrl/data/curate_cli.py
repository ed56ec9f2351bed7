"""`researchrl curate`: raw QA files to a clean training parquet (the maintainer mounts `curate` in cli.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from researchrl.data.curate import (
    ContaminationConfig,
    CurateConfig,
    CurateReport,
    LabelerConfig,
    MixConfig,
    curate as run_curate,
    parse_mix,
    report_path,
)
from researchrl.errors import ConfigError, UserError
from researchrl.options import err_console, exit_on_known, fail
from researchrl.outputs import check_file
from researchrl.policy.base import Policy

console = Console()


def curate(
    inputs: list[Path] = typer.Argument(..., help="Raw QA files: .parquet (veRL or flat), .jsonl or .csv with question + answer(s) columns."),
    out: Path = typer.Option(..., help="Output .parquet in the paper's veRL schema; the report goes to OUT.report.json."),
    limit: Optional[int] = typer.Option(None, min=1, help="Keep only the first N distinct questions (after dedup), to keep model stages cheap."),
    labeler_url: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL of the low-quality labeler LLM (enables the filter)."),
    labeler_model: Optional[str] = typer.Option(None, help="Labeler model name (paper: DeepSeek-R1); required with --labeler-url."),
    labeler_key_env: str = typer.Option("LABELER_API_KEY", help="Environment variable holding the labeler endpoint's key."),
    contamination_model: Optional[str] = typer.Option(None, help="Base model for the pass@k check: 'embedded', an HF path, or with --contamination-url the served name."),
    contamination_url: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL serving --contamination-model (chat API)."),
    contamination_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable holding the contamination endpoint's key."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch threads for a local contamination model (default: the free cores)."),
    k: int = typer.Option(10, min=1, help="Samples per question for the contamination check (paper: pass@10)."),
    temperature: float = typer.Option(1.0, min=0.0, help="Sampling temperature of the contamination samples (paper: unstated)."),
    mix: Optional[str] = typer.Option(None, help="Integer weights by source, e.g. hotpotqa=3,2wiki=3,nq=1,tq=1 (the paper's 1:1:3:3)."),
    size: Optional[int] = typer.Option(None, min=1, help="Total rows of the mix (default: the largest mix with exact ratios)."),
    seed: int = typer.Option(0, help="Seed of the mixing draws and the contamination samples."),
    split: str = typer.Option("train", help="Value of extra_info.split in every written row."),
) -> None:
    """Dedup, filter (LLM labels, pass@k contamination), mix and write raw QA as a training parquet, with a report."""
    for path in inputs:
        if not path.is_file():
            raise fail(f"input file not found: {path}")
    if out.suffix != ".parquet":
        raise fail(f"--out must end in .parquet, not {out.name!r}")
    if bool(labeler_url) != bool(labeler_model):
        raise fail("--labeler-url and --labeler-model go together")
    if contamination_url and not contamination_model:
        raise fail("--contamination-url needs --contamination-model (the served model's name)")
    if size is not None and mix is None:
        raise fail("--size needs --mix")
    try:
        ratios = parse_mix(mix) if mix is not None else None
    except ConfigError as err:
        raise fail(f"--mix: {err}") from None
    config = CurateConfig(
        split=split,
        limit=limit,
        seed=seed,
        labeler=LabelerConfig(labeler_url, labeler_model, labeler_key_env) if labeler_url and labeler_model else None,
        contamination=ContaminationConfig(contamination_model, k, temperature) if contamination_model else None,
        mix=MixConfig(ratios, size) if ratios is not None else None,
    )
    with exit_on_known():
        check_file(out, "--out")
        base_model = _base_model(contamination_model, contamination_url, contamination_key_env, threads) if contamination_model else None
        report = asyncio.run(_run(inputs, out, config, base_model))
    _print_summary(report, out)


def _base_model(name: str, url: str | None, key_env: str, threads: int | None) -> Policy:
    """The contamination model: a served one in chat mode, or a local transformers model."""
    if url:
        from researchrl.policy.openai import OpenAIPolicy

        return OpenAIPolicy(url, name, api_key_env=key_env)
    from researchrl.policy.hf import HFPolicy

    try:
        return HFPolicy.load(name, threads=threads)
    except UserError as err:  # a missing path or hub id, a missing extra
        raise UserError(f"cannot load --contamination-model {name!r}: {err}") from None


async def _run(inputs: list[Path], out: Path, config: CurateConfig, base_model: Policy | None) -> CurateReport:
    """The pipeline with progress bars on stderr; the base model is closed however it ends."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err_console) as progress:
            return await run_curate(inputs, out, config, base_model, progress)
    finally:
        if base_model is not None:
            await base_model.aclose()


def _print_summary(report: CurateReport, out: Path) -> None:
    """The funnel, stage by stage, then where the files went."""
    counts = report.counts
    table = Table(title="curate", show_header=True)
    table.add_column("stage")
    table.add_column("questions", justify="right")
    table.add_column("note")
    table.add_row("rows read", str(counts["rows"]), f"{len(report.inputs)} file(s)")
    table.add_row("bad rows", str(counts["bad_rows"] + counts["id_clashes"]), "skipped; listed in the report")
    table.add_row("duplicates", str(counts["duplicates"]), "merged into the first (gold sets joined)")
    table.add_row("distinct", str(counts["distinct"]), "")
    if report.config.limit is not None:
        table.add_row("after --limit", str(counts["after_limit"]), "")
    if report.config.labeler is not None:
        by_label = ", ".join(f"{lab} {sum(r.label == lab for r in report.labels)}" for lab in ("time_sensitive", "subjective", "harmful"))
        table.add_row("dropped by label", str(counts["dropped_by_label"]), by_label)
        unlabeled = counts["unlabeled"]
        table.add_row("unlabeled (kept)", f"[yellow]{unlabeled}[/]" if unlabeled else "0", "labeler fault or unreadable reply")
    if report.config.contamination is not None:
        table.add_row("contaminated", str(counts["contaminated"]), f"pass@{report.config.contamination.k} found a gold")
        unchecked = counts["unchecked"]
        table.add_row("unchecked (kept)", f"[yellow]{unchecked}[/]" if unchecked else "0", "base model endpoint fault")
    if report.config.mix is not None:
        shares = ", ".join(f"{s} {sh.taken}/{sh.target}" + (f" [yellow](short {sh.short})[/]" if sh.short else "") for s, sh in report.mix.items())
        left_out = ", ".join(f"{s} {n}" for s, n in report.not_in_mix.items())
        table.add_row("left out by mix", str(counts["mixed_out"]), shares + (f"; not in the mix: {left_out}" if left_out else ""))
    table.add_row("[bold]written[/]", f"[bold]{counts['written']}[/]", str(out))
    console.print(table)
    console.print(f"report: {report_path(out)}")
