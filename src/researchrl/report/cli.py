"""The `report` command; the main CLI mounts it as `researchrl report`."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from researchrl.options import exit_on_known
from researchrl.report.html import MAX_TRAJECTORIES, write_report


def report(
    run_dir: Path = typer.Argument(..., help="Run directory written by `researchrl train`, an eval directory, or a JSONL of trajectory records (serve agent --log, ask --file --out)."),
    out: Optional[Path] = typer.Option(None, help="Where to write the HTML page (default: RUN_DIR/report.html, or FILE.html beside a JSONL)."),
    open_browser: bool = typer.Option(False, "--open-browser", help="Open the page in the default web browser when written."),
    max_trajectories: int = typer.Option(MAX_TRAJECTORIES, min=1, help="Most trajectories on the page, spread evenly over the files."),
) -> None:
    """Write one self-contained HTML page of a run: config, training curves, eval tables, browsable trajectories."""
    with exit_on_known():
        path = write_report(run_dir, out, max_trajectories)
    Console().print(f"report: {path}")
    if open_browser:
        webbrowser.open(path.resolve().as_uri())

