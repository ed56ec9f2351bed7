"""Rows of .jsonl, .parquet and .csv files, read one way by the QA loader and the local corpus.

Input that cannot be read is an InputError (a UserError, so a ValueError) naming the file, and the line of bad
JSON (or, given `on_bad`, a skipped line reported to it); a missing file is one too.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from researchrl.bounds import MAX_LINE_CHARS, check_size
from researchrl.errors import UserError


class InputError(UserError):
    """A data file that cannot be read as rows: missing, not UTF-8, bad JSON, unsupported type, no question column."""


def read_parquet(path: Path) -> pa.Table:
    """The whole table, so callers can check its columns before reading rows."""
    _require(path)
    try:
        return pq.read_table(path)
    except pa.ArrowException as e:
        raise InputError(f"{path}: not a readable parquet file ({e})") from e


def parquet_rows(path: Path, table: pa.Table) -> Iterator[tuple[str, Any]]:
    """The table's rows as Python objects, each labelled `<path> row <i>` (0-based) for the caller's errors."""
    for i, row in enumerate(table.to_pylist()):
        yield f"{path} row {i}", row


def jsonl_rows(
    path: Path, label: str = "{path}: line {line}", on_bad: Callable[[str, str], None] | None = None
) -> Iterator[tuple[str, Any]]:
    """Decoded non-blank lines, each labelled by formatting `label` with the path and 1-based line number.

    A line of bad JSON, or past `bounds.MAX_LINE_CHARS` (refused before it is parsed), raises InputError, or with
    `on_bad` is passed to it as (label, reason) and skipped.
    """
    _require(path)
    with path.open(encoding="utf-8") as f:
        try:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = label.format(path=path, line=number)
                try:
                    check_size("the line", len(line), MAX_LINE_CHARS, error=InputError)
                    row = json.loads(line)
                except InputError as e:
                    reason = str(e)
                except json.JSONDecodeError as e:
                    reason = f"invalid JSON: {e.msg} (column {e.colno})"
                except RecursionError:
                    reason = "invalid JSON: nested too deeply"
                else:
                    yield where, row
                    continue
                if on_bad is None:
                    raise InputError(f"{where}: {reason}")
                on_bad(where, reason)
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not UTF-8 text: {e}") from e


def read_csv(path: Path) -> tuple[list[str], list[tuple[str, dict[str, str | None]]]]:
    """Header and records (labelled `<path> row <i>`, 0-based) of a UTF-8 CSV; a short record's missing cells are None."""
    _require(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            records = [(f"{path} row {i}", {k: v for k, v in row.items() if k is not None}) for i, row in enumerate(reader)]
            return list(reader.fieldnames or []), records
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text: {e}") from e
    except csv.Error as e:
        raise InputError(f"{path}: not a readable CSV file ({e})") from e


def _require(path: Path) -> None:
    """A missing path is the user's to fix: InputError naming it."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
