"""Keys out of everything that leaves the process: one `redact` for exceptions, logs, trajectories, reports and saved files.

`redact(text)` masks, wherever they appear:
    registered secrets   every key a client read from its env var, a cache URL's password (`register`)
    secrets passed in    the key one client sent, known to it even before it is registered
    credential shapes    `Bearer …`, `sk-…`, a URL's password (scheme://user:PASSWORD@host), key-like query
                         parameters (?api_key=…, &token=…)
A secret is masked wherever 8 or more of its characters appear in a row, so a key echoed in part never survives.
Redaction comes before the cut, so a key straddling an excerpt's end is never kept in part.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from typing import Any

EXCERPT_CHARS = 200
REDACTED = "[redacted]"
PIECE_CHARS = 8  # no run this long of a secret's characters survives; shorter values are never registered
_KEY_SHAPES = re.compile(
    r"(?i)\bBearer\s+(?!\[redacted\])(?=[^\s'\",;}\]]*[0-9._\-]|[^\s'\",;}\]]{20})[^\s'\",;}\]]+"  # a token, not prose
    r"|\bsk-[A-Za-z0-9_\-]{6,}"
)
_URL_PASSWORD = re.compile(  # kept when already masked, or written ${ENV_VAR} (web/cache.py reads it from there)
    r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s/?#@:'\"<>]*:)(?!\[redacted\]@|\$\{\w+\}@)[^\s/?#@'\"<>]+@"
)
_QUERY_KEY = re.compile(
    r"(?i)([?&](?:api[_-]?key|key|access[_-]?token|token|secret|password|passwd|sig|signature)=)"
    r"(?!\[redacted\])[^&#\s'\"<>]+"
)
_SECRET_ENV = re.compile(r"(?i)(^|_)(api_?key|token|secret|password|passwd)$")  # env vars that hold keys (not *_KEY: paths)

_lock = threading.Lock()
_registered: tuple[str, ...] = ()  # replaced whole, so a reader in another thread never sees it half-updated
_guarded = False


def register(*values: str | None) -> None:
    """Remember secret values for this process: from now on every `redact` masks them (values under 8 chars are not)."""
    global _registered
    fresh = {v for v in values if v and len(v) >= PIECE_CHARS} - set(_registered)
    if fresh:
        with _lock:
            _registered = (*_registered, *(fresh - set(_registered)))


def secret_env(name: str) -> str:
    """The value of the env var `name` ("" when unset), registered as a secret: it holds a key."""
    value = os.environ.get(name, "")
    register(value)
    return value


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every registered or given secret, in full or in part, and every credential shape, as "[redacted]"."""
    # shapes first: a registered key's piece (an `sk-proj-` prefix) masked first would hide another key's shape
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", text)
    text = _QUERY_KEY.sub(lambda m: m.group(1) + REDACTED, text)
    text = _KEY_SHAPES.sub(REDACTED, text)
    return _mask(text, [s for s in secrets if s] + list(_registered))


def excerpt(text: str, secrets: Iterable[str] = (), limit: int = EXCERPT_CHARS) -> str:
    """`text` on one line, redacted, then cut to `limit` characters ("…" marks a cut); "(empty body)" when blank."""
    line = redact(" ".join(text.split()), secrets)
    if not line:
        return "(empty body)"
    return line if len(line) <= limit else line[:limit] + "…"


def scrub(data: Any) -> Any:  # noqa: ANN401
    """JSON-like `data` (dicts, lists, tuples) with every string value redacted, for a file or page written from it."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {key: scrub(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(scrub(item) for item in data)
    return data


def guard_process() -> None:
    """At a command's start: keys in secret-named env vars are registered; logs and crash tracebacks are redacted."""
    global _guarded
    register(*(value for name, value in os.environ.items() if _SECRET_ENV.search(name)))
    if _guarded:
        return
    _guarded = True
    make_record = logging.getLogRecordFactory()

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:  # noqa: ANN401
        record = make_record(*args, **kwargs)
        try:
            record.msg, record.args = redact(record.getMessage()), None
        except (TypeError, ValueError):  # a malformed call: left as is, for logging to report when it is emitted
            return record
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(redacted_record)
    sys.excepthook = lambda kind, err, tb: sys.stderr.write(redact("".join(traceback.format_exception(kind, err, tb))))


def _mask(text: str, secrets: list[str]) -> str:
    """`text` with every occurrence of a secret, or of any 8-character piece of one, merged into "[redacted]" runs."""
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        size = min(len(secret), PIECE_CHARS)
        for piece in {secret[i : i + size] for i in range(len(secret) - size + 1)}:
            at = text.find(piece)
            while at >= 0:
                spans.append((at, at + size))
                at = text.find(piece, at + 1)
    if not spans:
        return text
    out, end = [], 0
    for start, stop in sorted(spans):
        if start > end or not out:
            out.append(text[end:start] + REDACTED)
        end = max(end, stop)
    return "".join(out) + text[end:]
