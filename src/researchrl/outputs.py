"""Where commands write: checked before any work starts, and a directory a failed start made is taken away again.

A mistake in an output path (a file where a directory goes, a directory where a file goes, a parent that is a
file) is one UserError before a model loads or an episode runs, so it costs nothing and leaves nothing.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path

from researchrl.errors import UserError


def check_dir(path: Path, flag: str) -> None:
    """`path` can be a directory we create or reuse: it is not a file, nor below one."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a directory")
    _check_parents(path, flag)


def check_file(path: Path, flag: str) -> None:
    """`path` can be a file we write: it is not a directory, and no parent is a file."""
    if path.is_dir():
        raise UserError(f"{flag} {path} is a directory; give a file path")
    _check_parents(path, flag)


def _check_parents(path: Path, flag: str) -> None:
    """The nearest existing parent of `path` is a directory."""
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is a file, not a directory")


@contextlib.contextmanager
def removed_on_failure(directory: Path, scaffolding: Collection[str]) -> Iterator[None]:
    """If the block fails, remove what it created of `directory` when that holds only `scaffolding` files (by name)."""
    created = next((p for p in [*reversed(directory.absolute().parents), directory.absolute()] if not p.exists()), None)
    try:
        yield
    except BaseException:
        if created is not None and created.is_dir():
            if all(p.name in scaffolding for p in created.rglob("*") if not p.is_dir()):
                shutil.rmtree(created)
        raise
