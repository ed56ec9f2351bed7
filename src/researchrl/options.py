"""What the commands share: options with one definition and help text, and the one-line exit for user mistakes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from researchrl.environment import SEARCH_NAMES
from researchrl.errors import ConfigError, EnvironmentFault, UserError
from researchrl.web.redact import guard_process, redact

err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """One clear red line (never wrapped, never holding a key) and exit code 2, for user mistakes and unreachable services."""
    # soft_wrap: `pip install trl[vllm]` stays whole; emoji=False: "127.0.0.1:-1:" stays text, not a thumbs-down
    err_console.print(f"[bold red]error:[/] {escape(redact(message))}", soft_wrap=True, emoji=False)
    return typer.Exit(code=2)


@contextlib.contextmanager
def exit_on_known() -> Iterator[None]:
    """Turn a UserError, or an EnvironmentFault that reached the command, into one line and exit 2; bugs keep their traceback.

    Every command runs inside: from its start, logs and tracebacks are redacted and keys in the environment are known.
    """
    guard_process()
    try:
        yield
    except (UserError, EnvironmentFault) as err:
        raise fail(str(err)) from None


MODEL = typer.Option("embedded", help="HF path/directory, 'embedded' (SmolLM2-135M-Instruct), or with --base-url the served model name.")
BASE_URL = typer.Option(None, help="OpenAI-compatible endpoint of the policy (vLLM, llama.cpp, Ollama, hosted).")
API_KEY_ENV = typer.Option("OPENAI_API_KEY", help="Environment variable holding the policy endpoint's key.")
TOKENIZER = typer.Option(None, help="With --base-url: HF tokenizer of the served model; enables token-exact completions mode.")
SEARCH_URL = typer.Option(None, help="Base URL override for the search provider (required for searxng).")
WEB = typer.Option("cache", help="Web responses: live | cache | record | replay (record/replay need --cache).")
CACHE = typer.Option(None, help="Cache store: a SQLite file, redis://host:port/db, or memory (default: memory offline, ~/.cache/researchrl/web.sqlite online).")
MAX_TURNS = typer.Option(10, min=1, help="Turn budget (paper: 10).")
MAX_NEW_TOKENS = typer.Option(512, min=1, help="Tokens per policy turn (paper: 2000; lower keeps CPU runs quick).")
MAX_CONTEXT_TOKENS = typer.Option(None, min=1, help="Context budget of an episode in tokens (default: the config's, 32768 as the paper); a served policy's own context size caps it too.")
TEMPERATURE = typer.Option(0.0, min=0.0, help="Sampling temperature (0 = greedy, the paper's evaluation).")
THREADS = typer.Option(None, min=1, help="Torch threads for a local model (default: the free cores).")
BF16 = typer.Option(None, "--bf16/--no-bf16", help="A local model decodes with bfloat16 weights (~1.6x faster on a CPU with native bf16, ~3.5x slower on an AVX2-only one); default: as the run's own evaluations (--run), else float32.")
RUN = typer.Option(None, help="A run directory made by researchrl train: use its model and its env and agent settings (greedy); flags you give override them.")
PHASE = typer.Option("after", help="With --run, which model: after (GRPO) | after_sft (warm-up) | before (base).")
CONFIG = typer.Option(None, help="TOML config file (see researchrl/configs/cpu.toml): its env and agent sections, and for train every key.")
SET = typer.Option([], "--set", help="Override one setting, section.key=value, e.g. --set env.reader=llm --set agent.max_turns=6 (repeatable).")
SEARCH = typer.Option("sandbox", help=f"Search backend: {' | '.join(SEARCH_NAMES)}.")
CORPUS = typer.Option(None, help="JSONL/parquet corpus for --search local.")
READER = typer.Option("extractive", help="Browsing reader: extractive (no LLM) | llm.")
READER_URL = typer.Option(None, help="OpenAI-compatible base URL of the reader LLM (--reader llm).")
READER_MODEL = typer.Option("qwen-plus", help="Reader model name (--reader llm).")
READER_MAX_TOKENS = typer.Option(None, min=1, help="Tokens per reader reply (--reader llm; default: no limit, as the paper).")
PROTOCOL = typer.Option("deepresearcher", help="Turn protocol: deepresearcher | search_r1.")


def local_bf16(flag: bool | None, base_url: str | None, run_eval_bf16: bool | None) -> bool:
    """Whether a local model decodes in bf16: --bf16/--no-bf16, else as the run's evaluations did (--run), else not;
    a --base-url server chooses its own precision."""
    if flag and base_url:
        raise ConfigError("--bf16 decodes a local model; a --base-url server chooses its own precision")
    return not base_url and bool(run_eval_bf16 if flag is None else flag)
