"""load_questions / write_questions_jsonl on the real benchmark files and on bad input."""

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from researchrl.data.load import load_questions, write_questions_jsonl
from researchrl.errors import UserError
from researchrl.types import ANSWER_SPLIT, Question

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SOURCES = {"nq", "tq", "hotpotqa", "2wiki", "musique", "Bamboogle", "popqa"}


def _shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.mark.parametrize(
    ("name", "rows", "per_source"),
    [
        ("deepresearcher_dev.parquet", 875, {s: 125 for s in SOURCES}),
        ("deepresearcher_test.parquet", 3197, {**{s: 512 for s in SOURCES}, "Bamboogle": 125}),
    ],
)
def test_benchmark_parquets(name: str, rows: int, per_source: dict[str, int]) -> None:
    questions = load_questions(_shared(f"benchmarks/{name}"))
    assert len(questions) == rows
    assert dict(Counter(q.source for q in questions)) == per_source
    assert len({q.id for q in questions}) == rows
    assert all(q.question.strip() and q.answers and q.id.startswith(q.source + "_") for q in questions)


def test_benchmark_row_fields() -> None:
    questions = {q.id: q for q in load_questions(_shared("benchmarks/deepresearcher_test.parquet"))}
    farrier = questions["tq_odql_7510"]
    assert farrier.source == "tq"
    assert farrier.question.startswith("Blacksmith is a general term for a worker in iron")
    assert farrier.answers == (
        "american farrier s association", "shoeing smith", "farriers", "shoesmith", "farrier", "farriery",
    )
    assert ANSWER_SPLIT in farrier.ground_truth
    assert questions["2wiki_7e37b0a0089511ebbd75ac1f6bf848b6"].answers == ("no",)


def test_limit() -> None:
    path = _shared("benchmarks/deepresearcher_dev.parquet")
    assert [q.id for q in load_questions(path, limit=3)] == [q.id for q in load_questions(path)[:3]]
    assert load_questions(path, limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        load_questions(path, limit=-1)


def test_wiki_questions_jsonl() -> None:
    questions = load_questions(_shared("wiki/questions.jsonl"))
    assert len(questions) == 200
    assert questions[0] == Question(
        id="hotpotqa_5a77ec115542992a6e59dff7",
        question="If Gallu is a demon Lilu is what?",
        answers=("a spirit",),
        source="hotpotqa",
    )
    assert load_questions(_shared("wiki/questions.jsonl"), limit=5) == questions[:5]


def test_round_trip(tmp_path: Path) -> None:
    questions = load_questions(_shared("benchmarks/deepresearcher_dev.parquet"), limit=50)
    out = tmp_path / "sub" / "dev50.jsonl"
    write_questions_jsonl(questions, out)
    assert load_questions(out) == questions


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_generic_jsonl_fields(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "generic.jsonl",
        [
            json.dumps({"id": 7, "question": "Q1?", "golden_answers": ["a", "b"]}),
            "",  # blank lines are skipped
            json.dumps({"question": "Q2?", "answer": f"x{ANSWER_SPLIT}y", "source": "mine"}),
            json.dumps({"question": "Q3?", "answers": ["", "  ", "z"], "data_source": "nq"}),
        ],
    )
    assert load_questions(path) == [
        Question(id="7", question="Q1?", answers=("a", "b")),
        Question(id="generic_1", question="Q2?", answers=("x", "y"), source="mine"),  # id from row index
        Question(id="generic_2", question="Q3?", answers=("z",), source="nq"),  # blank aliases dropped
    ]


def test_generic_parquet(tmp_path: Path) -> None:
    path = tmp_path / "flat.parquet"
    pq.write_table(pa.table({"id": ["a1"], "question": ["Who?"], "golden_answers": [["Ann", "Anne"]]}), path)
    assert load_questions(path) == [Question(id="a1", question="Who?", answers=("Ann", "Anne"))]


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (['{"question": "ok?", "answers": ["a"]}', '{"question": "broken'], r"line 2: invalid JSON"),
        (['{"answers": ["a"]}'], r"line 1: missing question"),
        (['{"question": "  ", "answers": ["a"]}'], r"line 1: missing question"),
        (['{"question": "q?"}'], r"line 1: no answers"),
        (['{"question": "q?", "answers": []}'], r"line 1: no answers \(all empty\)"),
        (['{"question": "q?", "answers": ["", " "]}'], r"line 1: no answers \(all empty\)"),
        (['{"question": "q?", "answer": 42}'], r"line 1: answers must be a string or a list of strings"),
        (['{"question": "q?", "answers": [1, 2]}'], r"line 1: answers must be a string or a list of strings"),
        (['["q?", "a"]'], r"line 1: expected an object, got list"),
        (
            ['{"prompt": [{"role": "system", "content": "s"}], "reward_model": {"ground_truth": "a"}}'],
            r"line 1: missing question \(no user message in prompt\)",
        ),
        (['{"prompt": [{"role": "user", "content": "q?"}], "reward_model": "a"}'], r"line 1: no answers"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path: Path, lines: list[str], match: str) -> None:
    path = _write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError, match=match) as info:
        load_questions(path)
    assert str(path) in str(info.value)


def test_bad_parquet_row_names_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"question": ["fine?", "no gold?"], "answers": [["a"], []]}), path)
    with pytest.raises(ValueError, match=r"row 1: no answers") as info:
        load_questions(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("corrupt.parquet", b"not a parquet file", "not a readable parquet file"),
        ("latin1.jsonl", '{"question": "caf\u00e9?", "answers": ["x"]}'.encode("latin-1"), "not UTF-8 text"),
        ("questions.csv", b"question,answer\n", "unsupported file type '.csv'"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        load_questions(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["absent.jsonl", "absent.parquet"])
def test_a_missing_file_is_a_user_error_naming_it(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError, match="no such file") as info:
        load_questions(tmp_path / name)
    assert str(tmp_path / name) in str(info.value)
