"""One redaction for everything that leaves the process: keys whole or in part, before any cut; URLs' secrets; logs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from researchrl.errors import ConfigError
from researchrl.web.cache import open_store
from researchrl.web.redact import EXCERPT_CHARS, excerpt, redact, register, scrub

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
    assert redact(f"got {KEY}; header Bearer {KEY}", [KEY, ""]) == "got [redacted]; header [redacted]"  # the Bearer shape goes whole
    assert excerpt("  \n ") == "(empty body)"
    assert excerpt("a  b\nc") == "a b c"


def test_a_registered_secret_is_masked_whole_or_in_part_and_short_values_are_not_registered() -> None:
    secret = "reg7Yx2Wq9Lm4Tz1Kp6Vb3Nd8Hc5Jf0"
    register(secret, "EMPTY", None)
    text = f"full {secret}; tail {secret[-10:]}; head {secret[:8]}x; short {secret[:7]}; placeholder EMPTY"
    assert redact(text) == "full [redacted]; tail [redacted]; head [redacted]x; short reg7Yx2; placeholder EMPTY"
    assert scrub({"a": [f"k={secret}", 3, None], "b": (secret,)}) == {"a": ["k=[redacted]", 3, None], "b": ("[redacted]",)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:pa55word@10.0.0.1:6379/0", "redis://:[redacted]@10.0.0.1:6379/0"),
        ("https://user:hunter2@searx.example.org/search", "https://user:[redacted]@searx.example.org/search"),
        ("redis://:${REDIS_PASSWORD}@host:6379/0", "redis://:${REDIS_PASSWORD}@host:6379/0"),  # a name, not a secret
        ("GET https://api.example.com/v1?q=x&api_key=abc123&n=2", "GET https://api.example.com/v1?q=x&api_key=[redacted]&n=2"),
        ("http://127.0.0.1:8080/path@x and the ring-bearer of old", "http://127.0.0.1:8080/path@x and the ring-bearer of old"),
    ],
)
def test_passwords_and_query_keys_in_urls_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_guarded_process_redacts_its_logs_and_crash_tracebacks() -> None:
    secret = "env4Rt8Yu1Io5Pa9Sd2Fg6Hj3Kl7Zx0"
    code = (
        "import logging; from researchrl.web.redact import guard_process; guard_process()\n"
        f"logging.getLogger('researchrl').error('sent %s', {secret!r}, exc_info=ValueError({secret!r}))\n"
        f"raise RuntimeError('echoed ' + {secret!r}[4:20])"
    )
    env = {**os.environ, "SOME_SERVICE_API_KEY": secret}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert "sent [redacted]" in result.stderr and "ValueError: [redacted]" in result.stderr
    assert "RuntimeError: echoed [redacted]" in result.stderr and "Traceback" in result.stderr
    assert secret[4:12] not in result.stderr


def test_a_cache_password_is_read_from_the_env_var_it_names_and_a_redacted_one_is_refused(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("TEST_CACHE_PASSWORD", "cache9Pw2Xe7Rt4Yu1Io6")
    store = open_store("redis://:${TEST_CACHE_PASSWORD}@127.0.0.1:1/0")  # no connection is made yet
    assert store._pool.connection_kwargs["password"] == "cache9Pw2Xe7Rt4Yu1Io6"
    assert redact("AUTH cache9Pw2Xe7Rt4Yu1Io6") == "AUTH [redacted]"
    with pytest.raises(ConfigError, match=r"names \$UNSET_CACHE_PASSWORD, which is not set"):
        open_store("redis://:${UNSET_CACHE_PASSWORD}@127.0.0.1:1/0")
    with pytest.raises(ConfigError, match="redacted when its config was saved"):
        open_store("redis://:[redacted]@127.0.0.1:1/0")
