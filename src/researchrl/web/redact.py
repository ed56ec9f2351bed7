"""Keys out of messages: what a provider or socket says back is redacted before anything prints, raises or stores it.

Redaction comes before the cut, so a key straddling an excerpt's end is never kept in part.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

EXCERPT_CHARS = 200
REDACTED = "[redacted]"
_KEY_SHAPES = re.compile(r"(?i)\bBearer\s+(?!\[redacted\])[^\s'\",;}\]]+|\bsk-[A-Za-z0-9_\-]{6,}")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each secret value, and anything shaped like `Bearer …` or `sk-…`, replaced by "[redacted]"."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, text)


def excerpt(text: str, secrets: Iterable[str] = (), limit: int = EXCERPT_CHARS) -> str:
    """`text` on one line, redacted, then cut to `limit` characters ("…" marks a cut); "(empty body)" when blank."""
    line = redact(" ".join(text.split()), secrets)
    if not line:
        return "(empty body)"
    return line if len(line) <= limit else line[:limit] + "…"
