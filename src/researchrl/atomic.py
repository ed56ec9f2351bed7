"""Files and directories a kill cannot leave half-written: written under a temporary name, then renamed into place.

A rename is atomic on POSIX, so a resumed run finds the old version or the new one, never part of one; a directory
published this way (`publish_dir`) is whole whenever it exists. This guards against a killed process, not a power
cut (no fsync).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to; renamed over `path` when the block ends without error."""
    tmp = path.with_name(path.name + ".partial")
    yield tmp
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    """`path.write_text(text)`, all or nothing."""
    with replacing(path) as tmp:
        tmp.write_text(text)


def remove_dir(path: Path) -> None:
    """Delete a directory so that it is whole or gone at every instant: renamed away first, then deleted."""
    gone = path.with_name(path.name + ".removing")
    shutil.rmtree(gone, ignore_errors=True)  # left by a kill during an earlier removal
    if path.exists():
        os.replace(path, gone)
        shutil.rmtree(gone)


def publish_dir(partial: Path, final: Path) -> None:
    """Rename a fully written directory to `final`, replacing any older one there."""
    remove_dir(final)
    os.replace(partial, final)
