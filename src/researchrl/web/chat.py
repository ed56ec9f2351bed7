"""One chat completion on any OpenAI-compatible endpoint, for the reader, the judge and the curation labeler.

`complete(client, model, messages, ...)` returns the reply's text ("" when a 2xx reply carries none) or raises
ChatError, whose `kind` says why, after bounded retries (backoff, jitter, Retry-After) where a retry can help:

    timeout | connect      no answer within the deadline, no connection            (retried)
    http_429 | http_5xx    overloaded or failing; 429 honours Retry-After           (retried)
    auth                   HTTP 401/403: the key or the endpoint is wrong           (not retried)
    http_<status>          any other refusal (400, 404, ...)                        (not retried)
    bad_response           a 2xx whose body is not a completion                     (not retried)

Messages carry the model, the status and an excerpt of the provider's text with the key used, and anything
shaped like a key, redacted before the cut (web/redact.py), as is a reply's text. The client's exception is
never chained.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import openai

from researchrl.errors import EnvironmentFault
from researchrl.web.redact import excerpt, redact, secret_env
from researchrl.web.retry import RetryableError, RetryPolicy, retry_after_seconds, with_retries

NO_KEY = "EMPTY"  # sent when the key's env var is unset: local servers without auth accept any key


class ChatError(EnvironmentFault):
    """A chat completion failed (`kind`: timeout, connect, auth, http_<status>, bad_response); no key in its text.

    `retried` is True when the kind was worth retrying and every try of the policy was spent.
    """

    def __init__(self, kind: str, message: str, retried: bool = False):
        super().__init__(kind, message)
        self.retried = retried


def openai_client(base_url: str, api_key_env: str, timeout: float) -> openai.AsyncOpenAI:
    """A client with the key read from `api_key_env` (registered as a secret; NO_KEY when unset), no retries."""
    return openai.AsyncOpenAI(base_url=base_url, api_key=secret_env(api_key_env) or NO_KEY, timeout=timeout, max_retries=0)


def secrets_of(client: openai.AsyncOpenAI) -> tuple[str, ...]:
    """The key this client sends, to redact from whatever comes back (none for the placeholder)."""
    return () if client.api_key in ("", NO_KEY) else (client.api_key,)


def api_failure(err: openai.APIError, secrets: Sequence[str]) -> RetryableError | ChatError:
    """The retryable or final form of an openai client error, its provider text redacted and excerpted."""
    if isinstance(err, openai.APITimeoutError):
        return RetryableError("request timed out", "timeout")
    if isinstance(err, openai.APIConnectionError):
        return RetryableError("cannot connect to the endpoint", "connect")
    status = getattr(err, "status_code", 0)
    detail = excerpt(_provider_text(err), secrets)
    if not isinstance(err, openai.APIStatusError):
        return ChatError("bad_response", f"HTTP {status}, not a completion: {detail}")
    if status == 429 or status >= 500:
        retry_after = retry_after_seconds(err.response.headers.get("retry-after"))
        return RetryableError(f"HTTP {status}: {detail}", f"http_{status}", retry_after)
    return ChatError("auth" if status in (401, 403) else f"http_{status}", f"HTTP {status}: {detail}")


async def complete(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[dict[str, str]],
    *,
    temperature: float,
    timeout: float,
    retry: RetryPolicy,
    max_tokens: int | None = None,
    rng: random.Random | None = None,
) -> str:
    """The reply text of one chat completion; `timeout` bounds each whole try, `retry` the tries; else ChatError."""

    async def attempt() -> str:
        return await _attempt(client, model, messages, temperature, max_tokens, timeout)

    try:
        return await with_retries(attempt, retry, rng)
    except RetryableError as err:
        failure = ChatError(err.kind, f"{model!r} failed after {retry.attempts} tries: {err}", retried=True)
    except ChatError as err:
        failure = ChatError(err.kind, f"{model!r}: {err}")
    raise failure


async def _attempt(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[dict[str, str]],
    temperature: float,
    max_tokens: int | None,
    timeout: float,
) -> str:
    """One try; failures are raised outside the `except` blocks so the client's exception is not even context."""
    failure: Exception
    try:
        completion = await asyncio.wait_for(
            client.chat.completions.create(
                model=model,
                messages=messages,  # type: ignore[arg-type]
                temperature=temperature,
                max_tokens=openai.NOT_GIVEN if max_tokens is None else max_tokens,
            ),
            timeout,
        )
    except asyncio.TimeoutError:
        failure = RetryableError(f"no reply within {timeout} s", "timeout")
    except openai.APIError as err:
        failure = api_failure(err, secrets_of(client))
    except (ValueError, RecursionError):  # openai lets the JSON parser's errors through (not JSON, not UTF-8, too deep)
        failure = ChatError("bad_response", "the body is not JSON")
    else:
        return redact(_reply_text(completion))  # a reply echoing a key stops here
    raise failure


def _reply_text(completion: object) -> str:
    """The first choice's text ("" when it carries none); ChatError when a 2xx JSON body is not shaped like a completion."""
    choices = getattr(completion, "choices", None)
    if not choices:
        return ""
    message = getattr(choices[0], "message", None) if isinstance(choices, list) else None
    content = getattr(message, "content", None)
    if message is None or not isinstance(content, (str, type(None))):
        raise ChatError("bad_response", "the body is not a completion")
    return content or ""


def _provider_text(err: openai.APIError) -> str:
    """What the provider said: the error body's `message`, else the body's text, else the client's message."""
    body = err.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return body if isinstance(body, str) else err.message
