"""A policy served by any OpenAI-compatible endpoint (vLLM, llama.cpp server, SGLang, Ollama, hosted APIs).

Two modes. `completions` (when a local tokenizer is given) sends the exact context token ids and reads back the
sampled ids and logprobs in whichever shape the server returns them (policy/wire.py); a server that returns no
ids gets its text re-encoded, which is said once and recorded (`exact_tokens: false`), and refused where exact
ids are required (training). `chat` sends the conversation as messages, with the protocol's prefill as a final
assistant message the server continues; ids are then UTF-8 bytes of the text (fine for asking and evaluating, not
training) and token counts come from the server's `usage`.

The server's context size is asked once (vLLM's /v1/models, llama.cpp's /props); each turn's max_tokens is capped
by the room left, and a request the server refuses as too long ends the episode as `context_budget`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import openai

from researchrl.errors import UserError
from researchrl.policy.base import ChatTokenizer, Context, ContextOverflow, FinishReason, Sample, Sampling
from researchrl.policy.tokenizers import ByteChatTokenizer, HFChatTokenizer, load_tokenizer
from researchrl.policy.wire import (
    RETOKENIZED, SampledTokens, context_size, is_context_overflow, is_llamacpp, llamacpp_sample, sampled_tokens, server_shape,
)
from researchrl.web.chat import ChatError, api_failure, openai_client, secrets_of
from researchrl.web.redact import excerpt
from researchrl.web.retry import RetryableError, RetryPolicy, with_retries

log = logging.getLogger(__name__)
CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}  # vLLM/SGLang: continue the last message
EXACT_IDS = {  # vLLM: ids as "token_id:N" and in `token_ids`; the text of exactly those ids
    "return_tokens_as_token_ids": True, "return_token_ids": True, "skip_special_tokens": False,
    "include_stop_str_in_output": True,  # else vLLM drops a stop string from the text, not from the ids
}


class PolicyUnavailable(UserError):
    """The policy endpoint cannot be used (unreachable, auth, bad model): the run stops with this one line.

    Its text names the status and the provider's message with the key, and anything shaped like one, redacted.
    """


class InexactTokens(UserError):
    """Exact sampled ids are required (training) but the server returned only text or token strings."""


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
        require_exact: bool = False,
        context_tokens: int | None = None,
    ):
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.require_exact = require_exact  # training: a turn without the server's sampled ids is an error
        self.context_limit = context_tokens  # the server's context size; asked on the first turn when not given
        self.client = openai_client(base_url, api_key_env, timeout)
        self.tokenizer: ChatTokenizer
        self.continue_prefill = True  # chat: cleared (with a warning) when the server refuses to continue a message
        self.llamacpp = False  # a llama.cpp server: completions go to its native /completion (see _complete_llamacpp)
        self._probe = asyncio.Lock()
        self._probed = False
        self._warned: set[str] = set()
        self._vocab: dict[str, int] | None = None
        if isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer)
        if tokenizer is not None:
            self.tokenizer = HFChatTokenizer(tokenizer)
            self.mode = "completions"
        else:
            self.tokenizer = ByteChatTokenizer()
            self.mode = "chat"
        self._eos = self.tokenizer.encode(self.tokenizer.eos_token, trusted=True)

    async def generate(self, context: Context, sampling: Sampling) -> Sample:
        """One turn, retried with backoff on 429/5xx/timeouts; a dead endpoint raises PolicyUnavailable."""
        await self._context_size()
        call = self._complete if self.mode == "completions" else self._chat
        try:
            return await with_retries(lambda: self._mapped(call(context, sampling)), self.retry)
        except RetryableError as err:
            failure = PolicyUnavailable(f"policy endpoint failed after {self.retry.attempts} tries: {err}")
        raise failure  # outside `except`: the client's exception is not even context

    async def _mapped(self, call: Any) -> Sample:
        """The turn, or the client's error as ContextOverflow, a retryable one or PolicyUnavailable, redacted."""
        failure: Exception
        try:
            return await call
        except openai.APIStatusError as err:
            if is_context_overflow(err.status_code, err.body or err.message):
                said = excerpt(err.message, secrets_of(self.client))
                failure = ContextOverflow(f"the server refused the request as longer than its context: {said}")
            else:
                failure = api_failure(err, secrets_of(self.client))
        except openai.APIError as err:
            failure = api_failure(err, secrets_of(self.client))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # openai lets the JSON parser's errors through
            failure = ChatError("bad_response", "a 2xx body that is not JSON")
        if not isinstance(failure, (RetryableError, ContextOverflow)):
            failure = PolicyUnavailable(f"policy endpoint answered {failure}")
        raise failure

    async def _context_size(self) -> None:
        """Ask the server its context size once (vLLM /v1/models, llama.cpp /props); unknown stays None."""
        if self._probed:
            return
        async with self._probe:
            if self._probed:
                return
            root = self.base_url.removesuffix("/v1")
            bodies = []
            async with httpx.AsyncClient(timeout=10.0, headers={"Authorization": f"Bearer {self.client.api_key}"}) as http:
                for url in (f"{self.base_url}/models", f"{root}/props"):
                    try:
                        response = await http.get(url)
                        bodies.append(response.json() if response.status_code == 200 else None)
                    except (httpx.HTTPError, ValueError):
                        bodies.append(None)
            self.context_limit = self.context_limit or context_size(*bodies)
            self.llamacpp = is_llamacpp(bodies[1])
            self._probed = True

    def _room(self, used: int, wanted: int) -> int:
        """Tokens this turn may sample: what was asked, capped by the server's context; none left is an overflow."""
        if self.context_limit is None:
            return wanted
        room = self.context_limit - used
        if room <= 0:
            raise ContextOverflow(f"the context holds {used} tokens, the server's limit is {self.context_limit}")
        return min(wanted, room)

    async def _chat(self, context: Context, sampling: Sampling) -> Sample:
        """Chat mode: messages in (the prefill as a final assistant message to continue), text and usage out."""
        messages = [{"role": m.role, "content": m.content} for m in context.messages]
        prefilled = bool(context.prefill) and self.continue_prefill
        try:
            response = await self._chat_request(messages, sampling, context.prefill if prefilled else "")
        except openai.BadRequestError as err:
            if not (prefilled and _refuses_continuation(err)):
                raise
            self.continue_prefill = prefilled = False
            self._warn_once("prefill", f"{self.base_url} cannot continue an assistant message ({err.message[:120]}); "
                            "chat turns go without the protocol's prefill, so the model must open it itself")
            response = await self._chat_request(messages, sampling, "")
        choice = response.choices[0]
        text = choice.message.content or ""
        if context.prefill and text.startswith(context.prefill):
            text = text[len(context.prefill) :]
        usage = response.usage
        counted = (usage.prompt_tokens, usage.completion_tokens) if usage is not None else None
        reason = "length" if choice.finish_reason == "length" else None
        return self._turn(self.tokenizer.encode(text, trusted=False), None, text, reason, exact=False, usage=counted)

    async def _chat_request(self, messages: list[dict[str, str]], sampling: Sampling, prefill: str) -> Any:
        """One chat request; with a prefill, it is the last message and the server is asked to continue it."""
        return await self.client.chat.completions.create(
            model=self.model,
            messages=[*messages, {"role": "assistant", "content": prefill}] if prefill else messages,  # type: ignore[list-item]
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop) or None,
            seed=sampling.seed,
            extra_body=CONTINUE if prefill else None,
        )

    async def _complete(self, context: Context, sampling: Sampling) -> Sample:
        """Completions mode: token ids in, sampled ids and logprobs out, read from the server's own shape."""
        if self.llamacpp:
            return await self._complete_llamacpp(context, sampling)
        response = await self.client.completions.create(
            model=self.model,
            prompt=context.ids,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=self._room(len(context.ids), sampling.max_new_tokens),
            stop=list(sampling.stop) or None,
            seed=sampling.seed,
            logprobs=1,
            extra_body=EXACT_IDS,
        )
        choice = response.choices[0].model_dump()
        text = choice.get("text") or ""
        tokens = sampled_tokens(choice, self._vocabulary())
        if tokens is not None and tokens.source == "vocab" and self.tokenizer.decode(tokens.ids) != text:
            tokens = None  # token strings that do not spell the text back are not the sampled ids
        if tokens is None:
            tokens = self._inexact(choice, text)
        ids, logprobs = tokens.ids, tokens.logprobs
        if logprobs is not None and len(logprobs) != len(ids):
            logprobs = None
        if tokens.exact:  # the text of exactly the sampled ids: vLLM cuts its text at a stop string that ends mid-token
            text = self._text_of(ids)
        usage = (response.usage.prompt_tokens, response.usage.completion_tokens) if response.usage else None
        reason: FinishReason | None = None
        if choice.get("finish_reason") == "length":
            reason = "length"
        elif isinstance(choice.get("stop_reason"), str) or any(text.endswith(s) for s in sampling.stop if s):
            reason = "stop"
        return self._turn(ids, logprobs, text, reason, exact=tokens.exact, usage=usage)

    async def _complete_llamacpp(self, context: Context, sampling: Sampling) -> Sample:
        """llama.cpp's native /completion: all sampled ids, the stop word's included, and whether EOS or a word stopped it.

        Its samplers are set to the plain distribution (no top-k, min-p or repetition penalty), as the policy's own.
        """
        body = {
            "prompt": context.ids, "n_predict": self._room(len(context.ids), sampling.max_new_tokens),
            "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0,
            "stop": list(sampling.stop), "n_probs": 1, "return_tokens": True, "cache_prompt": True,
            **({"seed": sampling.seed} if sampling.seed is not None else {}),
        }
        response = await self.client.post(f"{self.base_url.removesuffix('/v1')}/completion", cast_to=httpx.Response, body=body)
        tokens, stop_type, word = llamacpp_sample(response.json())
        reason: FinishReason | None = "length" if stop_type == "limit" else "stop" if stop_type == "word" and word else None
        return self._turn(tokens.ids, tokens.logprobs, self._text_of(tokens.ids), reason)

    def _text_of(self, ids: list[int]) -> str:
        """The text of sampled ids, without the EOS id a server may list last."""
        eos = self._eos
        return self.tokenizer.decode(ids[: -len(eos)] if ids[-len(eos) :] == eos else ids)

    def _turn(
        self, ids: list[int], logprobs: list[float | None] | None, text: str, reason: FinishReason | None, **extra: Any
    ) -> Sample:
        """The turn's Sample; one that ended on EOS (reason None) gets the EOS id appended when the server did not list it."""
        if reason is not None:
            return Sample(ids, logprobs, text, reason, **extra)
        eos = self._eos
        if ids[-len(eos) :] == eos:  # servers that keep the EOS id in the sampled ids (vLLM's token_ids, llama.cpp's tokens)
            return Sample(ids, logprobs, text, "eos", **extra)
        return Sample(ids + eos, None if logprobs is None else logprobs + [None] * len(eos), text, "eos", **extra)

    def _inexact(self, choice: dict[str, Any], text: str) -> SampledTokens:
        """No sampled ids in the reply: refused where exact ids are required, else the text re-encoded and said once."""
        shape = server_shape(choice)
        if self.require_exact:
            raise InexactTokens(
                f"{self.base_url} returned no sampled token ids ({shape}): training needs the ids the server sampled; "
                "serve the policy with vLLM or llama.cpp (README 'Servers'), which return them"
            )
        self._warn_once("inexact", f"{self.base_url} returned no sampled token ids ({shape}): its text is re-encoded, "
                        "which need not be what it sampled; records say exact_tokens: false")
        return SampledTokens(self.tokenizer.encode(text, trusted=False), None, RETOKENIZED)

    def _vocabulary(self) -> dict[str, int]:
        """The local tokenizer's vocabulary, for servers that name tokens without ids (read once)."""
        if self._vocab is None:
            hf = getattr(self.tokenizer, "hf", None)
            self._vocab = hf.get_vocab() if hf is not None else {}
        return self._vocab

    def _warn_once(self, key: str, message: str) -> None:
        """One warning line per kind of problem, not one per turn."""
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.close()


def _refuses_continuation(err: openai.BadRequestError) -> bool:
    """A 400 about the continuation parameters or a final assistant message: the server cannot continue one."""
    text = f"{err.message} {err.body}".lower()
    return any(word in text for word in ("continue_final_message", "add_generation_prompt", "final message", "assistant"))
