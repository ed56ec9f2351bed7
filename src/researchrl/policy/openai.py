"""A policy served by any OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama, hosted APIs).

Two modes. `completions` (when a local tokenizer is given) sends the exact context token ids and reads back
sampled ids and logprobs (vLLM's `return_tokens_as_token_ids`), so trajectories stay token-exact. `chat` sends
the conversation as messages; ids are then UTF-8 bytes of the text (fine for asking and evaluating, not training).
"""

from __future__ import annotations

import json
from typing import Any

import openai

from researchrl.errors import UserError
from researchrl.policy.base import ChatTokenizer, Context, Sample, Sampling
from researchrl.policy.tokenizers import ByteChatTokenizer, HFChatTokenizer
from researchrl.web.chat import ChatError, api_failure, openai_client, secrets_of
from researchrl.web.retry import RetryableError, RetryPolicy, with_retries


class PolicyUnavailable(UserError):
    """The policy endpoint cannot be used (unreachable, auth, bad model): the run stops with this one line.

    Its text names the status and the provider's message with the key, and anything shaped like one, redacted.
    """


class OpenAIPolicy:
    """Generate turns through an OpenAI-compatible server; the key comes only from the environment."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        tokenizer: str | Any | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy = RetryPolicy(),
    ):
        self.model = model
        self.retry = retry
        self.client = openai_client(base_url, api_key_env, timeout)
        self.tokenizer: ChatTokenizer
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            from researchrl.policy.embedded import from_pretrained

            tokenizer = from_pretrained(AutoTokenizer, tokenizer)
        if tokenizer is not None:
            self.tokenizer = HFChatTokenizer(tokenizer)
            self.mode = "completions"
        else:
            self.tokenizer = ByteChatTokenizer()
            self.mode = "chat"

    async def generate(self, context: Context, sampling: Sampling) -> Sample:
        """One turn, retried with backoff on 429/5xx/timeouts; a dead endpoint raises PolicyUnavailable."""
        call = self._complete if self.mode == "completions" else self._chat
        try:
            return await with_retries(lambda: self._mapped(call(context, sampling)), self.retry)
        except RetryableError as err:
            failure = PolicyUnavailable(f"policy endpoint failed after {self.retry.attempts} tries: {err}")
        raise failure  # outside `except`: the client's exception is not even context

    async def _mapped(self, call: Any) -> Sample:
        """The turn, or the client's error as a retryable one or PolicyUnavailable, its provider text redacted."""
        failure: Exception
        try:
            return await call
        except openai.APIError as err:
            failure = api_failure(err, secrets_of(self.client))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # openai lets the JSON parser's errors through
            failure = ChatError("bad_response", "a 2xx body that is not JSON")
        if not isinstance(failure, RetryableError):
            failure = PolicyUnavailable(f"policy endpoint answered {failure}")
        raise failure

    async def _chat(self, context: Context, sampling: Sampling) -> Sample:
        """Chat mode: messages in, text out; a prefill the server echoes is not doubled."""
        response = await self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": m.role, "content": m.content} for m in context.messages],  # type: ignore[misc]
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop) or None,
            seed=sampling.seed,
        )
        choice = response.choices[0]
        text = choice.message.content or ""
        if context.prefill and text.startswith(context.prefill):
            text = text[len(context.prefill) :]
        reason = "length" if choice.finish_reason == "length" else "eos"
        ids = self.tokenizer.encode(text, trusted=False)
        if reason == "eos":
            ids += self.tokenizer.encode(self.tokenizer.eos_token, trusted=True)
        return Sample(ids, None, text, reason)

    async def _complete(self, context: Context, sampling: Sampling) -> Sample:
        """Completions mode: token ids in, sampled ids and logprobs out."""
        response = await self.client.completions.create(
            model=self.model,
            prompt=context.ids,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop) or None,
            seed=sampling.seed,
            logprobs=1,
            extra_body={
                "return_tokens_as_token_ids": True, "return_token_ids": True, "skip_special_tokens": False,
                "include_stop_str_in_output": True,  # else vLLM drops a stop string from the text, not from the ids
            },
        )
        choice = response.choices[0]
        eos = self.tokenizer.encode(self.tokenizer.eos_token, trusted=True)
        ids = _token_ids(choice)
        text = choice.text
        if ids is None:
            ids = self.tokenizer.encode(text, trusted=False)
        else:  # the text of exactly the sampled ids: vLLM cuts its text at a stop string that ends mid-token
            text = self.tokenizer.decode(ids[: -len(eos)] if ids[-len(eos) :] == eos else ids)
        logprobs: list[float | None] | None = None
        values = getattr(choice.logprobs, "token_logprobs", None)
        if values is not None and len(values) == len(ids):
            logprobs = [None if x is None else float(x) for x in values]
        stop_string = getattr(choice, "stop_reason", None)
        if choice.finish_reason == "length":
            return Sample(ids, logprobs, text, "length")
        if isinstance(stop_string, str):
            return Sample(ids, logprobs, text, "stop")
        if ids[-len(eos) :] == eos:  # servers that keep the EOS id in the sampled ids (vLLM's token_ids)
            return Sample(ids, logprobs, text, "eos")
        return Sample(ids + eos, None if logprobs is None else logprobs + [None] * len(eos), text, "eos")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.close()


def _token_ids(choice: Any) -> list[int] | None:
    """Sampled ids: vLLM's `token_ids` field, else its 'token_id:N' logprob tokens; None when neither is there."""
    direct = (getattr(choice, "model_extra", None) or {}).get("token_ids")
    if isinstance(direct, list) and all(isinstance(t, int) for t in direct):
        return direct
    tokens = getattr(choice.logprobs, "tokens", None)
    if not tokens or not all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        return None
    return [int(t.split(":", 1)[1]) for t in tokens]
