"""The MBE judge against a real loopback chat-completions server whose replies and faults each test scripts."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from researchrl.eval.judge import (
    JUDGE_PROMPT,
    JUDGE_PROMPT_SHA,
    Judge,
    JudgeAuthError,
    Verdict,
    parse_judgement,
    render_judge_prompt,
)
from researchrl.web.cache import MemoryStore
from researchrl.web.retry import RetryPolicy

from .conftest import JudgeSite, Reply

KEY = "sk-judge-0123456789abcdef"
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
QUESTION = "In which city is the Eiffel Tower?"
GOLDS = ["Paris", "City of Light"]
CORRECT = '{"rationale": "Paris is the city.", "judgement": "correct"}'
INCORRECT = '{"rationale": "Lyon is another city.", "judgement": "incorrect"}'


def make_judge(site: JudgeSite, model: str = "judge-test", **overrides) -> Judge:  # noqa: ANN003
    settings = {"api_key_env": "JUDGE_API_KEY_TEST", "timeout": 5.0, "retry": FAST} | overrides
    return Judge(f"{site.base_url}/v1", model, **settings)


@pytest.fixture
async def judge(judge_site: JudgeSite, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("JUDGE_API_KEY_TEST", KEY)
    judge = make_judge(judge_site)
    yield judge
    await judge.aclose()


def test_prompt_is_pinned() -> None:
    # sha256 of the A.2 prompt as quoted in REFERENCE-deepresearcher.md §6 (computed from that file, not from here)
    assert JUDGE_PROMPT_SHA == "a01810f30d59460fe4a1d2a774fcc63f6b63b1e017fd3e25e45894e5d6ac358e"
    assert JUDGE_PROMPT.startswith("You will be given a question") and JUDGE_PROMPT.endswith("Your output:")


def test_prompt_rendering_follows_the_official_script() -> None:
    prompt = render_judge_prompt("Who wrote {pred_answer}?", "Victor Hugo<|answer_split|>V. HUGO", "Hugo, Victor!")
    assert "question: Who wrote {pred_answer}?\n" in prompt  # inserted text is not substituted again
    assert "ground truth answers: ['victor hugo', 'v. hugo']\n" in prompt
    assert "pred_answer: hugo victor\n" in prompt
    assert '{\n"rationale": "your rationale' in prompt  # the JSON example's braces survive


@pytest.mark.parametrize(
    ("reply", "parsed"),
    [
        (CORRECT, (True, "Paris is the city.")),
        (INCORRECT, (False, "Lyon is another city.")),
        ('```json\n{"rationale": "r", "judgement": " Correct "}\n```', (True, "r")),
        ('Sure. {"judgement": "INCORRECT"} Hope that helps.', (False, "")),
        ('{"rationale": 3, "judgement": "correct"}', (True, "")),
        ('{"rationale": "r", "judgement": "partially correct"}', None),
        ('{"rationale": "r", "judgement": true}', None),
        ('{"rationale": "r"}', None),
        ('{"rationale": "r", "judgement": "correct"', None),
        ("The answer is correct.", None),
        ('{"a": 1} and {"judgement": "correct"}', None),  # first "{" to last "}" is not one JSON value
        ("", None),
    ],
)
def test_parse_judgement(reply: str, parsed: tuple[bool, str] | None) -> None:
    assert parse_judgement(reply) == parsed


async def test_correct_and_incorrect_verdicts_and_the_request(judge_site: JudgeSite, judge: Judge) -> None:
    judge_site.replies = [Reply(CORRECT), Reply(INCORRECT)]
    assert await judge.judge(QUESTION, GOLDS, "Paris, France") == Verdict(True, "judge", "Paris is the city.")
    assert await judge.judge(QUESTION, GOLDS, "Lyon") == Verdict(False, "judge", "Lyon is another city.")
    assert judge_site.count == 2
    headers, body = judge_site.requests[0]
    assert headers["authorization"] == f"Bearer {KEY}"
    assert body["model"] == "judge-test" and body["temperature"] == 0.0 and "max_tokens" not in body
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You are a helpful assistant."}
    assert user == {"role": "user", "content": render_judge_prompt(QUESTION, GOLDS, "Paris, France")}
    filled = f"question: {QUESTION}\nground truth answers: ['paris', 'city of light']\npred_answer: paris france\n"
    assert filled in user["content"]


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        (None, Verdict(False, "no_answer")),
        ("", Verdict(False, "no_answer")),
        (" ?! ", Verdict(False, "no_answer")),
        ("paris.", Verdict(True, "exact")),
        ("City of light", Verdict(True, "exact")),
    ],
)
async def test_no_answer_and_exact_match_make_no_request(
    judge_site: JudgeSite, judge: Judge, pred: str | None, expected: Verdict
) -> None:
    assert await judge.judge(QUESTION, GOLDS, pred) == expected
    assert judge_site.count == 0


async def test_max_tokens_reaches_the_request_and_the_report(judge_site: JudgeSite) -> None:
    judge = make_judge(judge_site, max_tokens=32)
    judge_site.replies = [Reply(CORRECT)]
    assert (await judge.judge(QUESTION, GOLDS, "Paris, France")).correct is True
    await judge.aclose()
    ((_, body),) = judge_site.requests
    assert body["max_tokens"] == 32 and judge.info()["max_tokens"] == 32


async def test_unreadable_reply_is_asked_again(judge_site: JudgeSite, judge: Judge) -> None:
    judge_site.replies = [Reply("I think the answer is right."), Reply(CORRECT)]
    assert await judge.judge(QUESTION, GOLDS, "Paris, France") == Verdict(True, "judge", "Paris is the city.")
    assert judge_site.count == 2


@pytest.mark.parametrize("attempts", [1, 3])
async def test_unreadable_replies_give_up_after_parse_attempts(
    judge_site: JudgeSite, attempts: int
) -> None:
    judge_site.default = Reply('{"judgement": "maybe"}')
    judge = make_judge(judge_site, parse_attempts=attempts)
    assert await judge.judge(QUESTION, GOLDS, "Paris, France") == Verdict(None, "error", error="bad_judgement")
    assert judge_site.count == attempts
    await judge.aclose()


async def test_a_body_that_is_not_a_completion_counts_as_unreadable(judge_site: JudgeSite, judge: Judge) -> None:
    judge_site.replies = [Reply(raw="<html>gateway</html>"), Reply(CORRECT)]
    assert (await judge.judge(QUESTION, GOLDS, "Paris, France")).correct is True
    assert judge_site.count == 2


GARBAGE = {  # 200 application/json bodies a broken judge endpoint answers
    "not_json": b"upstream says hello",
    "not_utf8": b"\xff\xfe\x00\x81 garbage",
    "utf8_error_inside_json": b'{"choices": [{"message": {"content": "caf\xe9"}}]}',
    "too_deep": b"[" * 100_000,
    "choices_not_a_list": b'{"choices": "correct"}',
    "message_null": b'{"choices": [{"message": null}]}',
    "content_not_text": b'{"choices": [{"message": {"content": 5}}]}',
    "a_list": b"[1, 2]",
}


def garbage(name: str) -> Reply:
    """A 200 whose body, declared JSON, is the named garbage."""
    return Reply(raw=GARBAGE[name], headers={"content-type": "application/json"})


@pytest.mark.parametrize("name", GARBAGE)
async def test_a_200_json_body_that_is_not_a_completion_is_an_error_verdict(
    judge_site: JudgeSite, judge: Judge, name: str
) -> None:
    judge_site.default = garbage(name)
    assert await judge.judge(QUESTION, GOLDS, "Lyon") == Verdict(None, "error", error="bad_judgement")
    assert judge_site.count == judge.parse_attempts  # asked again, never retried in a loop


async def test_a_500_is_retried(judge_site: JudgeSite, judge: Judge) -> None:
    judge_site.replies = [Reply(status=500), Reply(CORRECT)]
    assert (await judge.judge(QUESTION, GOLDS, "Paris, France")).source == "judge"
    assert judge_site.count == 2


async def test_persistent_500_gives_an_error_verdict_after_bounded_retries(judge_site: JudgeSite, judge: Judge) -> None:
    judge_site.default = Reply(status=503)
    assert await judge.judge(QUESTION, GOLDS, "Paris, France") == Verdict(None, "error", error="http_503")
    assert judge_site.count == FAST.attempts


async def test_429_honours_retry_after_then_gives_up(judge_site: JudgeSite, judge: Judge) -> None:
    judge_site.default = Reply(status=429, headers={"retry-after": "0.25"})
    started = time.monotonic()
    assert await judge.judge(QUESTION, GOLDS, "Paris, France") == Verdict(None, "error", error="http_429")
    elapsed = time.monotonic() - started
    assert judge_site.count == FAST.attempts
    assert 0.25 * (FAST.attempts - 1) <= elapsed < 3.0  # the backoff alone would be ~0.03 s


async def test_a_hang_ends_in_an_error_verdict_in_bounded_time(judge_site: JudgeSite) -> None:
    judge_site.default = Reply(CORRECT, delay=10.0)
    judge = make_judge(judge_site, timeout=0.3, retry=RetryPolicy(attempts=2, base_delay=0.01))
    started = time.monotonic()
    assert await judge.judge(QUESTION, GOLDS, "Paris, France") == Verdict(None, "error", error="timeout")
    assert time.monotonic() - started < 1.5
    assert judge_site.count == 2
    await judge.aclose()


async def test_an_unreachable_endpoint_gives_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the judge tries it
    judge = Judge(f"http://127.0.0.1:{port}/v1", "judge-test", timeout=2.0, retry=FAST)
    started = time.monotonic()
    assert await judge.judge(QUESTION, GOLDS, "Paris, France") == Verdict(None, "error", error="connect")
    assert time.monotonic() - started < 2.0
    await judge.aclose()


async def test_other_refusals_are_not_retried(judge_site: JudgeSite, judge: Judge) -> None:
    judge_site.default = Reply(status=404)
    assert await judge.judge(QUESTION, GOLDS, "Paris, France") == Verdict(None, "error", error="http_404")
    assert judge_site.count == 1


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_raises_without_the_key(
    judge_site: JudgeSite, judge: Judge, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    judge_site.default = Reply(status=status)  # the server echoes the Authorization header in its error body
    with pytest.raises(JudgeAuthError) as err:
        await judge.judge(QUESTION, GOLDS, "Paris, France")
    assert judge_site.count == 1
    assert str(status) in str(err.value) and "JUDGE_API_KEY_TEST" in str(err.value)
    assert KEY not in str(err.value) and KEY not in repr(judge) and KEY not in caplog.text
    assert err.value.__cause__ is None and err.value.__context__ is None


def fragments(secret: str, size: int = 8) -> list[str]:
    """Every `size`-character piece of the secret: none may survive anywhere in an error."""
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


@pytest.mark.parametrize("key", [KEY, "live0123456789ABCDEFGHIJKLMN"])  # the second is not key-shaped
@pytest.mark.parametrize("straddle", [False, True])
async def test_a_provider_echoing_the_key_never_puts_it_in_the_auth_error(
    judge_site: JudgeSite, monkeypatch: pytest.MonkeyPatch, key: str, straddle: bool
) -> None:
    monkeypatch.setenv("JUDGE_API_KEY_TEST", key)
    judge = make_judge(judge_site)
    said = f"Incorrect API key provided: {key}"
    body = ("x" * (188 - said.index(key)) if straddle else "") + said  # straddling: 12 key characters before the cut
    assert not straddle or (key[:12] in body[:200] and key not in body[:200])
    judge_site.default = Reply(status=401, raw=body)
    with pytest.raises(JudgeAuthError) as err:
        await judge.judge(QUESTION, GOLDS, "Paris, France")
    await judge.aclose()
    assert judge_site.requests[0][0]["authorization"] == f"Bearer {key}"
    assert "HTTP 401" in str(err.value) and "[redacted]" in str(err.value)
    text = f"{err.value} {err.value!r} {err.value.args}"
    assert not [piece for piece in fragments(key) if piece in text], text
    assert err.value.__cause__ is None and err.value.__context__ is None


async def test_verdicts_are_cached_and_errors_are_not(judge_site: JudgeSite) -> None:
    store = MemoryStore()
    judge = make_judge(judge_site, store=store)
    judge_site.replies = [Reply(CORRECT)]
    assert await judge.judge(QUESTION, GOLDS, "Paris, France") == Verdict(True, "judge", "Paris is the city.")
    # the same normalised prediction: answered from the cache, rationale included, no request
    assert await judge.judge(QUESTION, GOLDS, "paris france") == Verdict(True, "cache", "Paris is the city.")
    assert judge_site.count == 1
    # another model is another key
    other = make_judge(judge_site, "judge-other", store=store)
    judge_site.replies = [Reply(INCORRECT)]
    assert (await other.judge(QUESTION, GOLDS, "paris france")).source == "judge"
    assert judge_site.count == 2
    await other.aclose()
    # an error is not remembered: the next call asks again
    judge_site.replies = [Reply(status=500)] * FAST.attempts + [Reply(INCORRECT)]
    assert (await judge.judge("Where is Lyon?", GOLDS, "Lyon")).source == "error"
    assert (await judge.judge("Where is Lyon?", GOLDS, "Lyon")) == Verdict(False, "judge", "Lyon is another city.")
    assert (await judge.judge("Where is Lyon?", GOLDS, "Lyon")).source == "cache"
    assert judge_site.count == 2 + FAST.attempts + 1
    await judge.aclose()


async def test_concurrency_is_bounded_at_the_server(judge_site: JudgeSite) -> None:
    judge_site.default = Reply(CORRECT, delay=0.2)
    judge = make_judge(judge_site, concurrency=3)
    verdicts = await asyncio.gather(*(judge.judge(QUESTION, GOLDS, f"answer {i}") for i in range(9)))
    assert all(v.correct for v in verdicts)
    assert judge_site.count == 9 and judge_site.max_in_flight == 3
    await judge.aclose()
