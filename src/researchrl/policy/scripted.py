"""A policy that plays a script: deterministic turns for tests and for expert demonstrations."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from researchrl.policy.base import ChatTokenizer, Context, Sample, Sampling

Script = Callable[[Context], str | Awaitable[str]]  # async scripts may call tools to decide (the warm-up's expert)


class ScriptedPolicy:
    """Each turn's text comes from `script(context)`; tokens are the tokenizer's encoding plus EOS, logprob 0."""

    def __init__(self, script: Script, tokenizer: ChatTokenizer):
        self.script = script
        self.tokenizer = tokenizer
        self.calls = 0

    async def generate(self, context: Context, sampling: Sampling) -> Sample:
        """Play the next scripted turn, cut at `max_new_tokens` like a real model would be."""
        self.calls += 1
        text = self.script(context)
        ids = self.tokenizer.encode(await text if inspect.isawaitable(text) else text, trusted=True)
        eos = self.tokenizer.encode(self.tokenizer.eos_token, trusted=True)
        if len(ids) + len(eos) > sampling.max_new_tokens:
            ids = ids[: sampling.max_new_tokens]
            return Sample(ids, [0.0] * len(ids), self.tokenizer.decode(ids), "length")
        return Sample(ids + eos, [0.0] * (len(ids) + len(eos)), self.tokenizer.decode(ids), "eos")

    async def aclose(self) -> None:
        """Nothing to release."""


def last_observation(context: Context) -> str:
    """The text of the most recent observation turn ('' before any), for scripts that react to tools."""
    for message in reversed(context.messages):
        if message.role == "user" and message.content.startswith("<tool_response>"):
            return message.content
    return ""
