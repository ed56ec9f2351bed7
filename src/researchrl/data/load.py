"""Load QA sets into `Question` records, and write them back as JSONL or as the paper's veRL parquet.

Row shapes understood, in .parquet or .jsonl files (and .csv for `scan_questions`):
- the paper's veRL rows: `prompt[0].content` (first user message), `reward_model.ground_truth` split on
  `<|answer_split|>`, `extra_info.index` as id, `data_source` as source;
- our JSONL (`wiki/questions.jsonl`): `{id, dataset, question, answers: [...]}`;
- generic rows: `question` plus the first of `answers`, `answer`, `golden_answers` (a string, split on
  `<|answer_split|>`, or a list of strings); `id` optional (else `<file stem>_<row index>`), source from
  `data_source`, `dataset` or `source`.
  In CSV cells an answer may also be a JSON list (`["a", "b"]`), and an empty cell counts as absent.
`load_questions`: a bad row raises InputError (a UserError) naming the file and the row or line, never a bare KeyError.
`scan_questions`: bad rows are collected as `BadRow`s and skipped; only a file that cannot hold questions at all
(missing, unreadable, unsupported type, no question column, no valid row) raises InputError.
A question or its gold answers past the limits in `bounds` make a bad row too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from researchrl.bounds import MAX_ANSWERS_CHARS, MAX_QUESTION_CHARS, check_size
from researchrl.data.rows import InputError, jsonl_rows, parquet_rows, read_csv, read_parquet
from researchrl.reward.answer import split_golds
from researchrl.types import ANSWER_SPLIT, Question

_ANSWER_FIELDS = ("answers", "answer", "golden_answers")
_SOURCE_FIELDS = ("data_source", "dataset", "source")
ABILITY = "search & question answering"
_MESSAGE = pa.struct([("content", pa.string()), ("role", pa.string())])
VERL_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.field("element", _MESSAGE))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
        ("extra_info", pa.struct([("index", pa.string()), ("split", pa.string())])),
    ]
)


def load_questions(path: str | Path, limit: int | None = None) -> list[Question]:
    """The first `limit` (default all) questions of a .parquet or .jsonl file, in file order."""
    path = Path(path)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if path.suffix == ".parquet":
        rows = parquet_rows(path, read_parquet(path))
    elif path.suffix == ".jsonl":
        rows = jsonl_rows(path)
    else:
        raise InputError(f"{path}: unsupported file type {path.suffix!r} (expected .parquet or .jsonl)")
    questions: list[Question] = []
    for index, (where, row) in enumerate(rows):
        if limit is not None and len(questions) >= limit:
            break
        questions.append(to_question(row, where, f"{path.stem}_{index}"))
    return questions


@dataclass(frozen=True)
class BadRow:
    """A row that could not become a question, kept for the report instead of stopping the run."""

    where: str
    reason: str


@dataclass(frozen=True)
class Scan:
    """Everything one file yielded: its questions in file order and the rows that were skipped."""

    path: Path
    rows: int
    questions: list[Question]
    bad_rows: list[BadRow]


def scan_questions(path: str | Path) -> Scan:
    """Every question of a .parquet, .jsonl or .csv file; bad rows are reported in the Scan, not raised."""
    path = Path(path)
    bad: list[BadRow] = []
    if path.suffix == ".parquet":
        table = read_parquet(path)
        _check_columns(path, table.column_names)
        rows = list(parquet_rows(path, table))
    elif path.suffix == ".csv":
        columns, records = read_csv(path)
        _check_columns(path, columns)
        rows = [(where, _csv_row(record)) for where, record in records]
    elif path.suffix == ".jsonl":
        rows = list(jsonl_rows(path, on_bad=lambda where, reason: bad.append(BadRow(where, reason))))
    else:
        raise InputError(f"{path}: unsupported file type {path.suffix!r} (expected .parquet, .jsonl or .csv)")
    read = len(rows) + len(bad)  # rows of bad JSON were reported while reading
    questions: list[Question] = []
    for index, (where, row) in enumerate(rows):
        try:
            questions.append(to_question(row, where, f"{path.stem}_{index}"))
        except InputError as e:
            bad.append(BadRow(where, str(e).removeprefix(f"{where}: ")))
    if not questions:  # every row bad: the wrong file, not a few bad rows
        first = f"; first: {bad[0].where}: {bad[0].reason}" if bad else ""
        raise InputError(f"{path}: no row holds a question ({read} rows{first})")
    return Scan(path, read, questions, bad)


def write_questions_jsonl(questions: Iterable[Question], path: str | Path) -> None:
    """Write questions as our JSONL (`{id, dataset, question, answers}`), which `load_questions` reads back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for q in questions:
            row = {"id": q.id, "dataset": q.source, "question": q.question, "answers": list(q.answers)}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_verl_parquet(questions: Sequence[Question], path: Path, split: str) -> None:
    """Rows in the paper's veRL schema (`style` "rule"), written to a temporary file and renamed into place."""
    rows = [
        {
            "data_source": q.source,
            "prompt": [{"content": q.question, "role": "user"}],
            "ability": ABILITY,
            "reward_model": {"ground_truth": ANSWER_SPLIT.join(q.answers), "style": "rule"},
            "extra_info": {"index": q.id, "split": split},
        }
        for q in questions
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    pq.write_table(pa.Table.from_pylist(rows, schema=VERL_SCHEMA), tmp)
    os.replace(tmp, path)


def to_question(row: Any, where: str, default_id: str, golds: bool = True) -> Question:
    """One row (veRL or flat) as a Question, or InputError saying what is missing; golds=False takes a bare question."""
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected an object, got {type(row).__name__}")
    verl = "prompt" in row and "reward_model" in row
    text = _verl_prompt(row["prompt"]) if verl else row.get("question")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: missing question" + (" (no user message in prompt)" if verl else ""))
    check_size(f"{where}: the question", len(text), MAX_QUESTION_CHARS, error=InputError)
    if verl:
        reward_model, extra = row["reward_model"], row.get("extra_info")
        raw = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
        qid = extra.get("index") if isinstance(extra, dict) else None
    else:
        absent = (None,) if golds else (None, "", [])  # without required golds, an empty field is no gold at all
        raw = next((row[k] for k in _ANSWER_FIELDS if row.get(k) not in absent), None)
        qid = row.get("id")
    source = next((row[k] for k in _SOURCE_FIELDS if isinstance(row.get(k), str)), "")
    return Question(
        id=default_id if qid is None else str(qid),
        question=text,
        answers=_answers(raw, where) if golds or raw is not None else (),
        source=source,
    )


def _check_columns(path: Path, columns: list[str]) -> None:
    """A table file must name its question and answer columns up front, else nothing in it can be read."""
    names = set(columns)
    if {"prompt", "reward_model"} <= names or ("question" in names and names & set(_ANSWER_FIELDS)):
        return
    raise InputError(
        f"{path}: no question/answer columns: expected prompt + reward_model (veRL) or question + one of "
        f"{', '.join(_ANSWER_FIELDS)}; found {', '.join(columns) or 'none'}"
    )


def _csv_row(record: dict[str, str | None]) -> dict[str, Any]:
    """A CSV record in the generic row shape: empty cells absent, answer cells holding a JSON list decoded."""
    row: dict[str, Any] = {k: v for k, v in record.items() if v is not None and v.strip()}
    for key in _ANSWER_FIELDS:
        cell = row.get(key)
        if isinstance(cell, str) and cell.lstrip().startswith("["):
            try:
                row[key] = json.loads(cell)
            except json.JSONDecodeError:
                pass  # a literal answer that happens to start with "[" stays text
    return row


def _verl_prompt(prompt: Any) -> str | None:
    """Content of the first user message of a veRL chat prompt, if there is one."""
    if not isinstance(prompt, list):
        return None
    for message in prompt:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else None
    return None


def _answers(raw: Any, where: str) -> tuple[str, ...]:
    """Non-blank gold aliases from a joined string or a list of strings."""
    if raw is None:
        raise InputError(f"{where}: no answers (expected one of {', '.join(_ANSWER_FIELDS)} or reward_model.ground_truth)")
    if not isinstance(raw, str) and not (isinstance(raw, list) and all(isinstance(a, str) for a in raw)):
        raise InputError(f"{where}: answers must be a string or a list of strings, got {raw!r:.80}")
    answers = tuple(a for a in split_golds(raw) if a.strip())
    if not answers:
        raise InputError(f"{where}: no answers (all empty)")
    check_size(f"{where}: the answers", sum(map(len, answers)), MAX_ANSWERS_CHARS, error=InputError)
    return answers
