"""`researchrl sandbox serve`: run the offline web in the foreground until Ctrl-C."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from researchrl.options import exit_on_known
from researchrl.sandbox.config import SandboxConfig
from researchrl.sandbox.faults import FAULT_KINDS, TARGETS, FaultConfig, Target
from researchrl.sandbox.reader_api import READER_MODEL
from researchrl.sandbox.server import SandboxServer

app = typer.Typer(no_args_is_help=True, add_completion=False)
SPREAD_KINDS = FAULT_KINDS[:5]  # what --fault-rate spreads over: the original five, so its meaning is unchanged
TARGET_ALIASES: dict[str, tuple[Target, ...]] = {"both": ("search", "pages"), "all": TARGETS}


@app.callback()
def sandbox() -> None:
    """The offline web: a Serper-compatible search API, a page server and a reader LLM on loopback, with fault injection."""


def _targets(value: str) -> tuple[Target, ...]:
    """--faults-on as targets: 'all', 'both' (search and pages), or a comma list of search, pages, reader."""
    if value in TARGET_ALIASES:
        return TARGET_ALIASES[value]
    names = [name.strip() for name in value.split(",")]
    if not names or any(name not in TARGETS for name in names):
        raise typer.BadParameter("must be all, both, or a comma list of search, pages, reader", param_hint="--faults-on")
    return tuple(dict.fromkeys(names))  # type: ignore[arg-type]


def _rate(help_text: str) -> Any:
    """A fault-rate option that overrides its share of --fault-rate."""
    return typer.Option(None, min=0.0, max=1.0, help=f"{help_text} (overrides its share of --fault-rate).")


@app.command()
def serve(
    port: int = typer.Option(8765, help="Port to listen on (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; keep loopback unless you mean to expose it."),
    passages: Path | None = typer.Option(None, help="Passages JSONL/parquet behind search and /wiki pages "
                                            "(default: $RESEARCHRL_SHARED_DATA/wiki/passages.jsonl, else ../shared/data/wiki/passages.jsonl)."),
    seed: int = typer.Option(0, help="Seed of the fault sequence."),
    latency_ms: float = typer.Option(0.0, help="Median latency added to each search, page and reader request, in ms."),
    latency_p99_ms: float | None = typer.Option(None, help="99th-percentile latency in ms; makes latency "
                                                   "lognormal (otherwise it is fixed at --latency-ms)."),
    fault_rate: float = typer.Option(0.0, min=0.0, max=1.0, help="Total fault rate, spread equally over "
                                     "429, 500, timeout, truncated and captcha."),
    rate_429: float | None = _rate("Rate of 429 Too Many Requests with Retry-After"),
    rate_500: float | None = _rate("Rate of 500 Internal Server Error"),
    rate_timeout: float | None = _rate("Rate of requests that hang for --hang-s before answering"),
    rate_truncated: float | None = _rate("Rate of bodies cut short of their Content-Length"),
    rate_captcha: float | None = _rate("Rate of 200 'Are you a robot?' captcha pages"),
    rate_garbage_json: float = typer.Option(0.0, min=0.0, max=1.0, help="Rate of 200 answers whose JSON body is "
                                            "garbage (search and reader)."),
    rate_redirect_loop: float = typer.Option(0.0, min=0.0, max=1.0, help="Rate of pages that redirect into a "
                                             "loop that never lands."),
    rate_huge_page: float = typer.Option(0.0, min=0.0, max=1.0, help="Rate of pages replaced by a 50 MB HTML "
                                         "body, streamed."),
    rate_binary: float = typer.Option(0.0, min=0.0, max=1.0, help="Rate of pages replaced by image/png bytes."),
    rate_bad_encoding: float = typer.Option(0.0, min=0.0, max=1.0, help="Rate of pages sent with Content-Encoding: "
                                            "gzip on a body that is not gzip."),
    huge_page_length: str = typer.Option("either", help="Whether a huge page declares its Content-Length: "
                                         "declared, chunked, or either (a seeded coin per page)."),
    hang_s: float = typer.Option(30.0, help="How long a timeout fault hangs, in seconds."),
    retry_after_s: int = typer.Option(1, help="Retry-After value of 429 responses, in seconds."),
    faults_on: str = typer.Option("all", help="Where faults apply: all, both (search and pages), or a comma "
                                  "list of search, pages, reader."),
) -> None:
    """Serve the sandbox on HOST:PORT until Ctrl-C."""
    share = fault_rate / len(SPREAD_KINDS)
    given = dict(zip(SPREAD_KINDS, (rate_429, rate_500, rate_timeout, rate_truncated, rate_captcha)))
    rates = {kind: share if rate is None else rate for kind, rate in given.items()}
    targets = _targets(faults_on)
    try:
        faults = FaultConfig(
            seed=seed, latency_ms=latency_ms, latency_p99_ms=latency_p99_ms, rate_429=rates["http_429"],
            rate_500=rates["http_500"], rate_timeout=rates["timeout"], rate_truncated=rates["truncated"],
            rate_captcha=rates["captcha"], retry_after_s=retry_after_s, hang_s=hang_s, targets=targets,
            rate_garbage_json=rate_garbage_json, rate_redirect_loop=rate_redirect_loop,
            rate_huge_page=rate_huge_page, rate_binary=rate_binary, rate_bad_encoding=rate_bad_encoding,
            huge_page_length=huge_page_length,  # type: ignore[arg-type]
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    config = SandboxConfig(host=host, port=port, faults=faults)
    if passages is not None:
        config = replace(config, passages=passages)
    console = Console()
    with exit_on_known(), console.status("Indexing passages and starting the server..."):
        server = SandboxServer(config).start()
    console.print(f"[bold green]Sandbox web[/] at [link]{server.url}[/link]  (passages: {config.passages})")
    console.print(f"  search API (Serper format): POST {server.url}/search  {{\"q\": ..., \"num\": 10}}")
    console.print(f"  pages:                      GET  {server.url}/wiki/<Title>, {server.url}/html/<collection>/<name>")
    console.print(f"  reader LLM (OpenAI API):    POST {server.url}/v1/chat/completions  model {READER_MODEL!r}")
    console.print(f"  fault counters:             GET  {server.url}/_faults    Ctrl-C to stop.")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        console.print("Stopping...")
    finally:
        server.stop()
        console.print(f"Stopped. Faults injected: {server.faults}")
