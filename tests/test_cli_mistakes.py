"""User mistakes, one table: each is one line on stderr, exit code 2, and nothing left where the command writes.

In process (CliRunner on the real app), offline and fast: every row fails before a model loads or, where it
cannot, against a closed port. `tmp_path` is the working directory and holds every output path, so "nothing
left behind" is: its contents are what the row's setup made.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from researchrl.cli import app
from tests.test_cli import run

Setup = Callable[[Path, contextlib.ExitStack], dict[str, str]]
QUESTION_ROW = {"id": "q1", "question": "If Gallu is a demon Lilu is what?", "answers": ["a spirit"]}
POLICY = ["--base-url", "http://127.0.0.1:9/v1"]  # nothing listens: no model is loaded, a call fails at once


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def files(tmp: Path, stack: contextlib.ExitStack) -> dict[str, str]:
    """A file, a directory, a closed port, a questions file and a file whose rows are all invalid."""
    (tmp / "a-file").write_text("not a directory\n")
    (tmp / "a-dir").mkdir()
    (tmp / "q.jsonl").write_text(json.dumps(QUESTION_ROW) + "\n")
    (tmp / "all-bad.jsonl").write_text('{"question": "no answers"}\nnot json\n')
    (tmp / "long.jsonl").write_text(json.dumps({**QUESTION_ROW, "question": "why " * 2_500}) + "\n")
    (tmp / "big.toml").write_text("# padding\n" * 100_001)
    return {"closed": str(closed_port())}


def busy_port(tmp: Path, stack: contextlib.ExitStack) -> dict[str, str]:
    """A loopback port another socket listens on for the whole invocation, and a tiny passages file."""
    taken = stack.enter_context(socket.socket())
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    (tmp / "passages.jsonl").write_text('{"id": "1", "title": "Lilu", "text": "A lilu is a spirit."}\n')
    return {"busy": str(taken.getsockname()[1])}


def local_eval(tmp: Path, stack: contextlib.ExitStack) -> dict[str, str]:
    """The files, and {tmp}/done: an evaluation of q.jsonl begun with the local model (its eval_config.json)."""
    values = files(tmp, stack)
    (tmp / "done").mkdir()
    begun = {"data": str(tmp / "q.jsonl"), "model": "embedded", "policy_endpoint": None, "policy_mode": "local",
             "protocol": "deepresearcher", "k": 1, "temperature": 0.0, "max_turns": 10, "max_new_tokens": 512,
             "search": "sandbox", "heldout": None}
    (tmp / "done" / "eval_config.json").write_text(json.dumps(begun))
    return values


MISTAKES: list[tuple[str, list[str], Setup, str]] = [
    ("micro_batch", ["train", "--set", "micro_batch=0"], files, "micro_batch must be at least 1, got 0"),
    ("group_size", ["train", "--set", "group_size=0"], files, "group_size must be at least 1, got 0"),
    ("timeout", ["ask", "q", "--set", "env.search_timeout=0"], files, "env.search_timeout must be above 0, got 0.0"),
    ("model", ["train", "--set", "model=/nonexistent"], files, "cannot load model '/nonexistent'"),
    ("train_out_file", ["train", "--output-dir", "{tmp}/a-file/runs"], files, "a-file is a file, not a directory"),
    ("train_cache_dir", ["train", "--set", "env.cache={tmp}/a-dir"], files, "a-dir is a directory: give a SQLite file"),
    ("train_redis", ["train", "--set", "env.cache=redis://127.0.0.1:{closed}/0"], files,
     "cannot use the cache: redis store 127.0.0.1:{closed}/0"),
    ("eval_out_file", ["eval", "--data", "{tmp}/q.jsonl", "--out", "{tmp}/a-file", *POLICY], files,
     "--out {tmp}/a-file is a file; give a directory"),
    ("eval_cache_dir", ["eval", "--data", "{tmp}/q.jsonl", "--out", "{tmp}/out", "--cache", "{tmp}/a-dir", *POLICY],
     files, "a-dir is a directory: give a SQLite file"),
    ("eval_redis", ["eval", "--data", "{tmp}/q.jsonl", "--out", "{tmp}/out", "--cache",
                    "redis://127.0.0.1:{closed}/0", *POLICY], files, "cannot use the cache: redis store"),
    ("eval_policy_down", ["eval", "--data", "{tmp}/q.jsonl", "--out", "{tmp}/out", "--base-url",
                          "http://127.0.0.1:{closed}/v1", "--max-turns", "1"], files, "cannot connect to the endpoint"),
    ("eval_long_question", ["eval", "--data", "{tmp}/long.jsonl", "--out", "{tmp}/out", *POLICY], files,
     "line 1: the question is 10,000 characters; the limit is 8,192"),
    ("eval_resume_other_policy", ["eval", "--data", "{tmp}/q.jsonl", "--out", "{tmp}/done", *POLICY], local_eval,
     "{tmp}/done holds a different evaluation (policy_endpoint None there, 'http://127.0.0.1:9/v1' now; "
     "policy_mode 'local' there, 'chat' now); use another --out"),
    ("eval_resume_completions", ["eval", "--data", "{tmp}/q.jsonl", "--out", "{tmp}/done", *POLICY, "--tokenizer", "/x"],
     local_eval, "policy_mode 'local' there, 'completions' now"),
    ("eval_bf16_endpoint", ["eval", "--data", "{tmp}/q.jsonl", "--out", "{tmp}/out", *POLICY, "--bf16"], files,
     "--bf16 decodes a local model; a --base-url server chooses its own precision"),
    ("ask_bf16_endpoint", ["ask", "q", *POLICY, "--bf16"], files,
     "--bf16 decodes a local model; a --base-url server chooses its own precision"),
    ("ask_tokenizer_missing", ["ask", "q", "--tokenizer", "/nonexistent", *POLICY], files,
     "cannot load tokenizer '/nonexistent': no such directory"),
    ("ask_tokenizer_file", ["ask", "q", "--tokenizer", "{tmp}/a-file", *POLICY], files,
     "cannot load tokenizer '{tmp}/a-file': a file, not a directory"),
    ("ask_tokenizer_empty_dir", ["ask", "q", "--tokenizer", "{tmp}/a-dir", *POLICY], files,
     "cannot load tokenizer '{tmp}/a-dir': the directory holds no tokenizer transformers can load"),
    ("curate_out_parent", ["curate", "{tmp}/q.jsonl", "--out", "{tmp}/a-file/sub/o.parquet"], files,
     "a-file is a file, not a directory"),
    ("curate_all_bad", ["curate", "{tmp}/all-bad.jsonl", "--out", "{tmp}/o.parquet"], files,
     "all-bad.jsonl: no row holds a question (2 rows; first:"),
    ("ask_save_dir", ["ask", "q", "--save", "{tmp}/a-dir", *POLICY], files, "--save {tmp}/a-dir is a directory"),
    ("ask_long_question", ["ask", "why " * 2_500, *POLICY], files, "the question is 10,000 characters; the limit is 8,192"),
    ("ask_big_config", ["ask", "q", "--config", "{tmp}/big.toml", *POLICY], files,
     "config file {tmp}/big.toml is 1,000,010 bytes; the limit is 1,000,000"),
    ("serve_busy", ["sandbox", "serve", "--port", "{busy}", "--passages", "{tmp}/passages.jsonl"], busy_port,
     "cannot listen on 127.0.0.1:{busy}"),
    ("serve_negative", ["sandbox", "serve", "--port", "-1", "--passages", "{tmp}/passages.jsonl"], busy_port,
     "cannot listen on 127.0.0.1:-1: bind(): port must be 0-65535"),
]


def contents(root: Path) -> set[str]:
    """Every path below `root`, files and directories."""
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.mark.parametrize(("argv", "setup", "message"), [row[1:] for row in MISTAKES], ids=[row[0] for row in MISTAKES])
def test_a_mistake_is_one_line_exit_2_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], setup: Setup, message: str
) -> None:
    monkeypatch.chdir(tmp_path)  # relative defaults (runs/) land here too
    with contextlib.ExitStack() as stack:
        values = {"tmp": str(tmp_path), **setup(tmp_path, stack)}
        before = contents(tmp_path)
        result = CliRunner().invoke(app, [arg.format(**values) for arg in argv], env={"COLUMNS": "200"})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exception, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message.format(**values) in lines[0]
    assert contents(tmp_path) == before


def test_the_real_command_agrees(tmp_path: Path) -> None:
    """One row through a real process: what a user's terminal gets, no CliRunner in between."""
    (tmp_path / "a-dir").mkdir()
    result = run("ask", "q", "--save", str(tmp_path / "a-dir"), *POLICY, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: --save {tmp_path / 'a-dir'} is a directory; give a file path"]
    assert contents(tmp_path) == {"a-dir"}
