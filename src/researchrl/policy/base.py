"""The Policy seam: token ids in, sampled token ids and their logprobs out (token-in/token-out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from researchrl.config import RUNTIME

FinishReason = Literal["eos", "stop", "length"]


@dataclass(frozen=True)
class Sampling:
    """Decoding settings for one turn; defaults are the paper's training settings (T=1, top-p 1, 2000 tokens a turn)."""

    temperature: float = 1.0  # paper: 1.0 for rollouts; evaluation is greedy (0)
    top_p: float = 1.0  # nucleus sampling (paper: 1.0)
    max_new_tokens: int = 2000  # tokens per policy turn (paper: 2000)
    stop: tuple[str, ...] = field(default=(), metadata=RUNTIME)  # set per turn by the protocol
    seed: int | None = field(default=None, metadata=RUNTIME)  # set per turn from (run seed, question, sample, turn)


@dataclass(frozen=True)
class Message:
    """One chat message, for endpoints that only speak chat (the transcript keeps these beside the token ids)."""

    role: str
    content: str


@dataclass(frozen=True)
class Context:
    """What the policy continues: exact token ids, plus the same conversation as messages and the forced prefix."""

    ids: list[int]
    messages: list[Message]
    prefill: str


@dataclass(frozen=True)
class Sample:
    """One generated turn: the sampled ids (EOS included when hit), their logprobs if known, and the decoded text."""

    token_ids: list[int]
    logprobs: list[float | None] | None
    text: str
    finish_reason: FinishReason
    exact: bool = True  # the ids are the ones sampled (False: re-encoded text, or a chat endpoint's UTF-8 bytes)
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens as the server counted them, when it said


class ContextOverflow(Exception):
    """The context has no room for another turn (the server refused it as too long): the episode ends, not the run."""


class ChatTokenizer(Protocol):
    """The tokenizer operations the agent needs; `trusted=False` text can never become special tokens."""

    eos_token: str

    def encode(self, text: str, trusted: bool) -> list[int]:
        """Token ids of `text` without BOS/EOS additions."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`, special tokens kept."""
        ...

    def render_chat(self, messages: list[Message], tools: list[dict] | None, add_generation_prompt: bool) -> str:
        """The model's chat template applied to `messages` (and tool schemas if given)."""
        ...


class Policy(Protocol):
    """Anything that continues a context; many concurrent `generate` calls may be batched by the implementation."""

    tokenizer: ChatTokenizer

    async def generate(self, context: Context, sampling: Sampling) -> Sample:
        """Sample one turn continuing `context`."""
        ...

    async def aclose(self) -> None:
        """Release workers and connections."""
        ...
