"""MBE (model-based evaluation): an LLM judge decides whether a predicted answer means the same as a gold answer.

The paper's metric, on any OpenAI-compatible chat endpoint: a missing answer is incorrect and an exact match
(after the paper's normalisation) is correct without asking; anything else is one chat completion with the
pinned judge prompt, parsed strictly. Faults never crash an evaluation and never loop:

    endpoint fault (429, 5xx, timeout, connect)  -> bounded retries with backoff, then Verdict(None, "error", kind)
    reply without a readable judgement           -> asked again, `parse_attempts` calls in all, then "bad_judgement"
    (a 2xx body that is not a completion counts as an unreadable reply)
    other refusals (400, 404, ...)               -> Verdict(None, "error", "http_<status>") at once
    401 / 403                                    -> JudgeAuthError: a user mistake that stops the run

Every call goes through `web.chat.complete`, so no message carries the key.

Verdicts the judge reached are cached (errors are not), keyed by model, prompt hash, question, golds and the
normalised prediction, so a re-run of an evaluation asks nothing twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import openai

from researchrl.errors import UserError
from researchrl.prompts import JUDGE_PROMPT
from researchrl.reward.answer import em, normalize, split_golds
from researchrl.web.cache import Store, cache_key
from researchrl.web.chat import ChatError, complete, openai_client
from researchrl.web.retry import RetryPolicy

JUDGE_PROMPT_SHA = hashlib.sha256(JUDGE_PROMPT.encode()).hexdigest()
JUDGE_SYSTEM = "You are a helpful assistant."
_PLACEHOLDER = re.compile(r"\{(question|gt_answer|pred_answer)\}")
_CACHE_NS = "judge"

VerdictSource = Literal["exact", "judge", "cache", "no_answer", "error"]


@dataclass(frozen=True)
class Verdict:
    """The MBE outcome of one answer; `correct` is None only when the judge could not decide (`error` says why)."""

    correct: bool | None
    source: VerdictSource
    rationale: str = ""
    error: str | None = None  # failure kind: timeout, connect, http_429, http_500, bad_judgement, ...

    @property
    def score(self) -> float | None:
        """The record's `mbe`: 1.0, 0.0, or None when undecided."""
        return None if self.correct is None else float(self.correct)

    def record_fields(self) -> dict[str, Any]:
        """An eval record's MBE fields: `mbe`, and the whole verdict under `judge` (tables count its errors)."""
        return {"mbe": self.score, "judge": dataclasses.asdict(self)}


class JudgeAuthError(UserError):
    """The judge endpoint refused our credentials (401/403): fix the key or endpoint, retrying cannot help."""


def render_judge_prompt(question: str, golds: str | Sequence[str], pred: str) -> str:
    """The pinned prompt filled as the official script does: repr of the lower-cased gold list, normalised pred."""
    values = {
        "question": question,
        "gt_answer": repr([gold.lower() for gold in split_golds(golds)]),
        "pred_answer": normalize(pred),
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], JUDGE_PROMPT)  # one pass: inserted text is never re-read


def parse_judgement(reply: str) -> tuple[bool, str] | None:
    """(correct, rationale) from the text between the first "{" and the last "}" as JSON, else None."""
    start, end = reply.find("{"), reply.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        obj = json.loads(reply[start : end + 1])
    except json.JSONDecodeError:
        return None
    judgement = obj.get("judgement") if isinstance(obj, dict) else None
    if not isinstance(judgement, str) or judgement.strip().lower() not in ("correct", "incorrect"):
        return None
    rationale = obj.get("rationale")
    return judgement.strip().lower() == "correct", rationale if isinstance(rationale, str) else ""


@dataclass
class Judge:
    """The paper's MBE judge (official: gpt-4o-mini at temperature 0.7) on any OpenAI-compatible endpoint.

    Temperature defaults to 0 so a verdict is reproducible and worth caching. The API key comes from the
    environment variable `api_key_env` (a placeholder when unset, for local servers); an auth error names the
    status, the variable and the provider's text with the key redacted. `concurrency` bounds requests in flight.
    """

    base_url: str
    model: str
    api_key_env: str = "JUDGE_API_KEY"
    temperature: float = 0.0
    timeout: float = 60.0  # seconds for one whole request
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_tokens: int | None = None  # tokens per verdict reply (official: no limit)
    parse_attempts: int = 2  # calls in all when replies hold no readable judgement
    store: Store | None = None  # verdict cache; owned by the caller
    concurrency: int = 16
    _client: openai.AsyncOpenAI = field(init=False, repr=False)
    _slots: asyncio.Semaphore = field(init=False, repr=False)
    _rng: random.Random = field(init=False, repr=False, default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.parse_attempts < 1 or self.concurrency < 1 or self.retry.attempts < 1 or (self.max_tokens or 1) < 1:
            raise ValueError("Judge needs parse_attempts, concurrency, retry.attempts and max_tokens (when set) >= 1")
        self._client = openai_client(self.base_url, self.api_key_env, self.timeout)
        self._slots = asyncio.Semaphore(self.concurrency)

    def info(self) -> dict[str, Any]:
        """What a report should say about the judge (no endpoint, no key)."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "prompt": "DeepResearcher paper appendix A.2",
            "prompt_sha256": JUDGE_PROMPT_SHA,
        }

    async def judge(self, question: str, golds: str | Sequence[str], pred: str | None) -> Verdict:
        """The verdict on `pred` (None or empty: no answer, e.g. a format failure); raises only JudgeAuthError."""
        if pred is None or not normalize(pred):
            return Verdict(False, "no_answer")
        if em(pred, golds):
            return Verdict(True, "exact")
        key = cache_key(self.model, JUDGE_PROMPT_SHA, question, split_golds(golds), normalize(pred))
        if self.store is not None and (hit := await self.store.get(_CACHE_NS, key)) is not None:
            cached = json.loads(hit)
            return Verdict(cached["correct"], "cache", cached["rationale"])
        prompt = render_judge_prompt(question, golds, pred)
        for _ in range(self.parse_attempts):
            reply = await self._complete(prompt)
            if isinstance(reply, Verdict):
                return reply
            parsed = parse_judgement(reply)
            if parsed is not None:
                correct, rationale = parsed
                if self.store is not None:
                    value = json.dumps({"correct": correct, "rationale": rationale}).encode()
                    await self.store.put(_CACHE_NS, key, value, None)
                return Verdict(correct, "judge", rationale)
        return Verdict(None, "error", error="bad_judgement")

    async def aclose(self) -> None:
        """Close the HTTP client (the store belongs to the caller)."""
        await self._client.close()

    async def _complete(self, prompt: str) -> str | Verdict:
        """One chat completion's text within one slot ("" for a body that is not a completion), or an error verdict."""
        messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}]
        async with self._slots:
            try:
                return await complete(
                    self._client, self.model, messages, temperature=self.temperature, timeout=self.timeout,
                    retry=self.retry, max_tokens=self.max_tokens, rng=self._rng,
                )
            except ChatError as err:
                failure = err
        if failure.kind == "auth":
            raise JudgeAuthError(f"the judge endpoint refused the credentials ({failure}); check ${self.api_key_env}")
        return "" if failure.kind == "bad_response" else Verdict(None, "error", error=failure.kind)
