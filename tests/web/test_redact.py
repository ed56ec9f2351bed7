"""Redaction before the cut: no excerpt of provider text keeps a key, whole or in part, wherever the key falls."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from researchrl.web.redact import EXCERPT_CHARS, excerpt, redact

KEY = "live0123456789ABCDEFGHIJKLMN"  # not key-shaped: only the key actually sent can redact it


@given(lead=st.integers(min_value=0, max_value=EXCERPT_CHARS + 10), bearer=st.booleans())
def test_no_eight_characters_of_the_key_survive_an_excerpt(lead: int, bearer: bool) -> None:
    text = "x" * lead + ("Bearer " if bearer else "") + KEY + " tail"
    cut = excerpt(text, [KEY])
    assert not [KEY[i : i + 8] for i in range(len(KEY) - 7) if KEY[i : i + 8] in cut], cut


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Incorrect API key provided: Bearer sk-proj-abc123XYZ", "Incorrect API key provided: [redacted]"),
        ("{'authorization': 'bearer abc.def'}", "{'authorization': '[redacted]'}"),
        ("key sk-ant-api03-0123456789 refused", "key [redacted] refused"),
        ("a task-force of sk-short keys", "a task-force of sk-short keys"),  # not key-shaped: kept
    ],
)
def test_key_shaped_text_is_redacted_without_being_given(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_the_key_sent_is_redacted_wherever_it_appears() -> None:
    assert redact(f"got {KEY}; header Bearer {KEY}", [KEY, ""]) == "got [redacted]; header Bearer [redacted]"
    assert excerpt("  \n ") == "(empty body)"
    assert excerpt("a  b\nc") == "a b c"
