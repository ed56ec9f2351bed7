"""One reading of OpenAI-client failures for every OpenAI-compatible endpoint we call (reader, judge, labeler)."""

from __future__ import annotations

import openai

from researchrl.web.retry import RetryableError, retry_after_seconds


def retryable(err: openai.APIError, endpoint: str) -> RetryableError | None:
    """The retryable form of a client error (timeout, connection, 429, 5xx with Retry-After), else None.

    Messages name only `endpoint` and the status: provider text can echo what was sent.
    """
    if isinstance(err, openai.APITimeoutError):
        return RetryableError(f"{endpoint} request timed out", "timeout")
    if isinstance(err, openai.APIConnectionError):
        return RetryableError(f"cannot reach the {endpoint} endpoint", "connect")
    status = getattr(err, "status_code", 0)
    if status == 429 or status >= 500:
        response = getattr(err, "response", None)
        retry_after = retry_after_seconds(response.headers.get("retry-after")) if response is not None else None
        return RetryableError(f"HTTP {status}", f"http_{status}", retry_after)
    return None
