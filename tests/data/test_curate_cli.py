"""The `curate` command, mounted on a tiny typer app the way cli.py mounts it, driven through CliRunner."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from researchrl.data.curate import report_path
from researchrl.data.curate_cli import curate
from researchrl.data.load import load_questions
from researchrl.errors import UserError
from researchrl.types import Question
from researchrl.web.chat import ChatError
from tests.data.test_curate import FakeChat, asked_question, chat_servers, labeled_question, read_report

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(curate)


@app.command()
def version() -> None:
    """A second command, so `curate` is mounted as a named sub-command as in the real CLI."""


def invoke(*args: str, env: dict[str, str] | None = None):  # noqa: ANN201
    return CliRunner().invoke(app, ["curate", *args], env={"COLUMNS": "200", **(env or {})})


@pytest.fixture
def chat_server() -> Iterator[Callable[..., FakeChat]]:
    with chat_servers() as start:
        yield start


@pytest.fixture(scope="module")
def dev_path(shared_data: Path) -> Path:
    return shared_data / "benchmarks" / "deepresearcher_dev.parquet"


def test_every_flag_has_help() -> None:
    command = get_command(app).commands["curate"]  # type: ignore[attr-defined]
    names = {opt for p in command.params for opt in p.opts}
    for flag in ("--out", "--limit", "--labeler-url", "--labeler-model", "--labeler-key-env", "--contamination-model",
                 "--contamination-url", "--k", "--temperature", "--mix", "--size", "--seed", "--split"):
        assert flag in names
    assert all(p.help for p in command.params), [p.name for p in command.params if not p.help]


def test_mix_on_real_dev_prints_a_summary(dev_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.parquet"
    result = invoke(str(dev_path), "--out", str(out), "--mix", "hotpotqa=3,2wiki=3,nq=1,tq=1", "--size", "80", "--seed", "1")
    assert result.exit_code == 0, result.output
    written = load_questions(out)
    assert Counter(q.source for q in written) == {"hotpotqa": 30, "2wiki": 30, "nq": 10, "tq": 10}
    assert re.search(r"written\s*│\s*80", result.stdout)
    assert "hotpotqa 30/30" in result.stdout and "not in the mix: popqa 125" in result.stdout
    assert str(report_path(out)) in result.stdout.replace("\n", "")
    assert read_report(out)["config"]["mix"] == {"ratios": {"hotpotqa": 3, "2wiki": 3, "nq": 1, "tq": 1}, "size": 80}


def _bad_csv(tmp_path: Path) -> Path:
    path = tmp_path / "wrong.csv"
    path.write_text("query,label\nWho?,me\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/absent.jsonl"], "input file not found"),
        (["{dev}", "--mix", "hotpotqa=three"], "--mix: bad mix entry 'hotpotqa=three'"),
        (["{dev}", "--mix", "nq=1,nq=2"], "appears twice"),
        (["{csv}"], "no question/answer columns"),
        (["{dev}", "--size", "10"], "--size needs --mix"),
        (["{dev}", "--labeler-url", "http://127.0.0.1:9/v1"], "--labeler-url and --labeler-model go together"),
        (["{dev}", "--contamination-url", "http://127.0.0.1:9/v1"], "needs --contamination-model"),
        (["{dev}", "--contamination-model", "{tmp}/no-such-model"], "cannot load --contamination-model"),
    ],
)
def test_user_mistakes_are_one_red_line_and_exit_2(dev_path: Path, tmp_path: Path, args: list[str], message: str) -> None:
    filled = [a.format(tmp=tmp_path, dev=dev_path, csv=_bad_csv(tmp_path)) for a in args]
    result = invoke(*filled, "--out", str(tmp_path / "out.parquet"))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not (tmp_path / "out.parquet").exists()


def test_a_user_error_through_the_real_cli_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    done = subprocess.run([sys.executable, "-m", "researchrl.cli", "curate", str(_bad_csv(tmp_path)), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'wrong.csv'}: no question/answer columns: expected "
                                                "prompt + reward_model (veRL) or question + one of answers, answer, "
                                                "golden_answers; found query, label"]
    assert "Traceback" not in done.stderr and not out.exists()


@pytest.mark.parametrize(
    ("error", "one_line"),
    [
        (UserError("the labeler's model is not served here"), True),
        (ChatError("connect", "cannot connect to the endpoint"), True),  # an environment fault that reached the command
        (KeyError("a bug"), False),
    ],
)
def test_only_known_errors_become_one_line(
    dev_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, one_line: bool
) -> None:
    async def failing(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("researchrl.data.curate_cli.run_curate", failing)
    result = invoke(str(dev_path), "--out", str(tmp_path / "out.parquet"))
    if one_line:
        assert result.exit_code == 2 and result.stderr.strip().splitlines() == [f"error: {error}"]
    else:  # a bug keeps its exception (and so its traceback), never a tidy line
        assert result.exit_code == 1 and result.exception is error and "error:" not in result.stderr


def test_out_must_be_parquet(dev_path: Path, tmp_path: Path) -> None:
    result = invoke(str(dev_path), "--out", str(tmp_path / "out.csv"))
    assert result.exit_code == 2 and "--out must end in .parquet" in result.stderr


def test_labeler_and_contamination_through_the_command(dev_path: Path, tmp_path: Path, chat_server) -> None:  # noqa: ANN001
    dev = load_questions(dev_path, limit=5)
    by_text: dict[str, Question] = {q.question: q for q in dev}
    labeler = chat_server(lambda prompt, body: (200, "<answer>harmful</answer>" if labeled_question(prompt) == dev[0].question else "<answer>good</answer>"))

    def base_reply(prompt: str, body: dict) -> tuple[int, str]:
        q = by_text[asked_question(prompt)]
        return 200, (f"Surely {q.answers[0]}!" if q is dev[1] else "Not sure.")

    base = chat_server(base_reply)
    out = tmp_path / "clean.parquet"
    result = invoke(
        str(dev_path), "--out", str(out), "--limit", "5",
        "--labeler-url", labeler.url, "--labeler-model", "r1", "--labeler-key-env", "CURATE_CLI_KEY",
        "--contamination-model", "served-base", "--contamination-url", base.url, "--k", "2", "--temperature", "0.5",
        env={"CURATE_CLI_KEY": "sk-cli-secret"},
    )
    assert result.exit_code == 0, result.output
    assert [q.id for q in load_questions(out)] == [q.id for q in dev[2:]]
    assert re.search(r"dropped by label\s*│\s*1\s*│\s*time_sensitive 0, subjective 0, harmful 1", result.stdout)
    assert re.search(r"contaminated\s*│\s*1", result.stdout)
    assert {h["authorization"] for h in labeler.headers} == {"Bearer sk-cli-secret"}
    assert len(labeler.bodies) == 5 and len(base.bodies) == 1 + 2 * 3  # the hit stops after one sample
    assert {b["model"] for b in base.bodies} == {"served-base"} and {b["temperature"] for b in base.bodies} == {0.5}
    report = read_report(out)
    assert report["contamination"]["dropped"][0]["id"] == dev[1].id
    assert "sk-cli-secret" not in result.output + report_path(out).read_text(encoding="utf-8")
