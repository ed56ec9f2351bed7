"""`researchrl ask --file --out`: answers one JSON line per question, resumable, refusing a different job or a bad line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from researchrl.cli import app
from tests.test_cli import run

QUICK = ["--max-turns", "2", "--max-new-tokens", "48"]
BARE = {"question": "Who wrote the novel Dune?"}  # no id, no golds: what someone who wants answers gives


def questions_file(directory: Path, shared: Path) -> Path:
    """Two shared questions with ids and golds, and one bare question."""
    path = directory / "questions.jsonl"
    lines = (shared / "wiki" / "questions.jsonl").read_text().splitlines()[:2]
    path.write_text("".join(line + "\n" for line in [*lines, json.dumps(BARE)]))
    return path


@pytest.fixture(scope="module")
def answered(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """One real batch on the embedded model: the directory holding questions.jsonl and out/answers.jsonl."""
    directory = tmp_path_factory.mktemp("batch")
    questions = questions_file(directory, shared_data)
    result = run("ask", "--file", str(questions), "--out", str(directory / "out" / "answers.jsonl"), *QUICK)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 written now, 0 from before, of 3" in result.stdout and "web: upstream calls" in result.stdout
    return directory


def copy(answered: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The questions and the answers (with their config file) in a test's own directory."""
    shutil.copytree(answered, tmp_path, dirs_exist_ok=True)
    return tmp_path / "questions.jsonl", tmp_path / "out" / "answers.jsonl"


def ask(*args: str | Path) -> tuple[int, list[str], str]:
    """`researchrl ask ARGS` in process: exit code, the non-blank stderr lines, stdout."""
    result = CliRunner().invoke(app, ["ask", *map(str, args)], env={"COLUMNS": "200"})
    return result.exit_code, [line for line in result.stderr.splitlines() if line.strip()], result.stdout


@pytest.mark.model
def test_one_record_per_question_with_answer_sources_and_the_trajectory(answered: Path) -> None:
    records = [json.loads(line) for line in (answered / "out" / "answers.jsonl").read_text().splitlines()]
    golds = {json.loads(line)["id"]: json.loads(line)["answers"] for line in (answered / "questions.jsonl").read_text().splitlines()[:2]}
    assert sorted(r["id"] for r in records) == sorted([*golds, "questions_2"])  # a line without an id: <stem>_<row>
    for record in records:
        assert {"id", "question", "answer", "termination", "sources", "turns", "tool_calls", "golds", "tokens_sha256"} <= set(record)
        assert record["turns"] and record["turns"][0]["sampled_tokens"] > 0
        scored = record["id"] in golds
        assert record["golds"] == golds.get(record["id"], [])
        assert all((record[key] is not None) == scored for key in ("reward", "f1", "em"))
    settings = json.loads((answered / "out" / "answers.jsonl.config.json").read_text())
    assert settings["model"] == "embedded" and settings["agent"]["max_turns"] == 2 and settings["env"]["search"] == "sandbox"
    assert settings["bf16"] is False  # no --run, no --bf16: float32


@pytest.mark.model
def test_a_rerun_skips_every_answered_question_without_loading_a_model(
    answered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    questions, out = copy(answered, tmp_path)
    before = out.read_bytes()
    monkeypatch.setattr("researchrl.cli._policy", lambda *a, **k: pytest.fail("a finished batch loaded the policy"))
    code, errors, stdout = ask("--file", questions, "--out", out, *QUICK)
    assert (code, errors) == (0, [])
    assert "0 written now, 3 from before, of 3" in stdout and out.read_bytes() == before


@pytest.mark.model
def test_answers_from_before_bf16_was_recorded_resume_as_float32_and_a_bf16_rerun_is_refused(
    answered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    questions, out = copy(answered, tmp_path)
    config = out.with_name(out.name + ".config.json")
    older = json.loads(config.read_text())
    del older["bf16"]  # as written before the key existed
    config.write_text(json.dumps(older))
    monkeypatch.setattr("researchrl.cli._policy", lambda *a, **k: pytest.fail("a finished batch loaded the policy"))
    code, errors, stdout = ask("--file", questions, "--out", out, *QUICK)
    assert (code, errors) == (0, []) and "0 written now, 3 from before, of 3" in stdout
    code, errors, _ = ask("--file", questions, "--out", out, *QUICK, "--bf16")
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"error: --out {out} holds answers of a different job (bf16 False there, True now)")


@pytest.mark.model
def test_a_cut_last_line_is_answered_again_and_nothing_else(answered: Path, tmp_path: Path) -> None:
    questions, out = copy(answered, tmp_path)
    *kept, last = out.read_text().splitlines(keepends=True)
    out.write_text("".join(kept) + last[: len(last) // 2])  # killed while writing the last answer
    result = run("ask", "--file", str(questions), "--out", str(out), *QUICK)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 written now, 2 from before, of 3" in result.stdout
    lines = out.read_text().splitlines(keepends=True)
    assert lines[:2] == kept and json.loads(lines[2])["id"] == json.loads(last)["id"]


@pytest.mark.model
def test_a_different_job_into_the_same_out_is_refused(answered: Path, tmp_path: Path) -> None:
    questions, out = copy(answered, tmp_path)
    before = out.read_bytes()
    code, errors, _ = ask("--file", questions, "--out", out, "--max-turns", "3", "--max-new-tokens", "48")
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"error: --out {out} holds answers of a different job (agent.max_turns 2 there, 3 now)")
    assert out.read_bytes() == before


@pytest.mark.model
def test_the_answers_file_is_a_report_page(answered: Path) -> None:
    from researchrl.report.html import build_report

    assert build_report(answered / "out" / "answers.jsonl").count('class="traj"') == 3


GOOD = json.dumps({"id": "a", "question": "Who wrote Dune?"})
BAD_LINES = [
    ("not_json", [GOOD, "{not json"], "questions.jsonl: line 2: invalid JSON"),
    ("no_question", [GOOD, "", json.dumps({"id": "b", "text": "?"})], "questions.jsonl: line 3: missing question"),
    ("too_long", [json.dumps({"question": "why " * 2_500})], "line 1: the question is 10,000 characters; the limit is 8,192"),
    ("bad_golds", [json.dumps({"question": "q", "answers": 3})], "line 1: answers must be a string or a list of strings"),
    ("repeated_id", [GOOD, GOOD], "questions.jsonl: line 2: id 'a' repeats line 1"),
    ("empty", [""], "questions.jsonl holds no questions"),
]


@pytest.mark.parametrize(("lines", "message"), [row[1:] for row in BAD_LINES], ids=[row[0] for row in BAD_LINES])
def test_a_bad_questions_line_is_one_error_naming_it(tmp_path: Path, lines: list[str], message: str) -> None:
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(line + "\n" for line in lines))
    code, errors, _ = ask("--file", questions, "--out", tmp_path / "out" / "answers.jsonl")
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["questions.jsonl"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give a question or --file"),
        (["q", "--file", "{tmp}/q.jsonl", "--out", "{tmp}/a.jsonl"], "give a question or --file, not both"),
        (["--file", "{tmp}/q.jsonl"], "--file and --out go together"),
        (["q", "--out", "{tmp}/a.jsonl"], "--file and --out go together"),
        (["--file", "{tmp}/q.jsonl", "--out", "{tmp}/a.jsonl", "--save", "{tmp}/t.json"], "--save and --gold are for one question"),
        (["--file", "{tmp}/q.jsonl", "--out", "{tmp}/a.jsonl", "--gold", "x"], "--save and --gold are for one question"),
        (["--file", "{tmp}/q.txt", "--out", "{tmp}/a.jsonl"], "--file takes a .jsonl file"),
        (["--file", "{tmp}/missing.jsonl", "--out", "{tmp}/a.jsonl"], "missing.jsonl: no such file"),
        (["--file", "{tmp}/q.jsonl", "--out", "{tmp}/q.jsonl"], "--out must be another file than --file"),
        (["--file", "{tmp}/q.jsonl", "--out", "{tmp}"], "is a directory; give a file path"),
        (["--file", "{tmp}/q.jsonl", "--out", "{tmp}/other.jsonl"], "holds lines but no other.jsonl.config.json beside it"),
    ],
)
def test_flag_mistakes_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "q.jsonl").write_text(GOOD + "\n")
    (tmp_path / "other.jsonl").write_text("my notes\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, errors, _ = ask(*(arg.format(tmp=tmp_path) for arg in args))
    assert code == 2 and len(errors) == 1 and message in errors[0], errors
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
