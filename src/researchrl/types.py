"""Typed records that cross module boundaries: questions, tool calls, observations, turns, trajectories."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ANSWER_SPLIT = "<|answer_split|>"


@dataclass(frozen=True)
class Question:
    """One QA item; `answers` are the gold aliases (any one counts)."""

    id: str
    question: str
    answers: tuple[str, ...]
    source: str = ""
    context: str = ""  # documents shown with the question (RAG baseline only; agents search for themselves)

    @property
    def ground_truth(self) -> str:
        """Gold answers joined the way the paper's parquet stores them."""
        return ANSWER_SPLIT.join(self.answers)


@dataclass(frozen=True)
class SearchResult:
    """One organic search hit, the only shape every provider is reduced to."""

    title: str
    url: str
    snippet: str


@dataclass(frozen=True)
class ToolCall:
    """A parsed, schema-checked tool call from the policy."""

    name: str
    arguments: dict[str, list[str]]


@dataclass(frozen=True)
class Answer:
    """The policy's final answer (text between the first <answer> and </answer>)."""

    text: str


@dataclass(frozen=True)
class FormatError:
    """The policy's turn broke the protocol; `reason` names the first violation."""

    reason: str


Action = Answer | ToolCall | FormatError


@dataclass(frozen=True)
class Observation:
    """What a tool returns to the policy; `errors` name environment faults (counted, never raised)."""

    tool: str
    text: str
    errors: tuple[str, ...] = ()


@dataclass
class Turn:
    """One policy turn: its sampled text and tokens, the parsed action, and the observation that followed."""

    text: str
    token_ids: list[int]
    logprobs: list[float | None] | None
    finish_reason: str
    action: Action
    observation: Observation | None = None
    observation_ids: list[int] = field(default_factory=list)
    exact: bool = True  # token_ids are the ones the policy sampled (False: re-encoded text or UTF-8 bytes)
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens as the policy's server counted them


Termination = Literal["answer", "format_error", "turn_budget", "context_budget"]


@dataclass(frozen=True)
class RewardBreakdown:
    """The scalar reward and its parts, so logs can show why a rollout scored what it did."""

    reward: float
    format_ok: bool
    format_error: str | None
    answer: str | None
    f1: float
    em: float


@dataclass
class Trajectory:
    """A finished episode, token-exact: `ids = prompt_ids + completion_ids`, `mask` marks policy-sampled tokens."""

    question: Question
    prompt_ids: list[int]
    completion_ids: list[int]
    mask: list[int]
    logprobs: list[float | None]
    turns: list[Turn]
    termination: Termination
    reward: RewardBreakdown | None = None
    token_unit: Literal["token", "byte"] = "token"  # byte: a chat endpoint's text as UTF-8 bytes, not model tokens

    @property
    def exact_tokens(self) -> bool:
        """True when every id is a model token the policy sampled or was shown: trainable as is."""
        return self.token_unit == "token" and all(turn.exact for turn in self.turns)

    def token_counts(self) -> tuple[int, int, int] | None:
        """(prompt, completion, sampled) model tokens: the ids' own counts, or a chat server's usage; None unknown."""
        if self.token_unit == "token":
            return len(self.prompt_ids), len(self.completion_ids), sum(self.mask)
        usage = [turn.usage for turn in self.turns if turn.usage is not None]
        if not usage or len(usage) != len(self.turns):
            return None
        (prompt, _), (last_prompt, last_completion) = usage[0], usage[-1]
        return prompt, last_prompt + last_completion - prompt, sum(completion for _, completion in usage)

    @property
    def terminated(self) -> bool:
        """True when the policy ended the episode itself (answer or format error)."""
        return self.termination in ("answer", "format_error")

    @property
    def truncated(self) -> bool:
        """True when a budget (turns, context) ended the episode."""
        return not self.terminated

    @property
    def answer(self) -> str | None:
        """The final answer text, if the episode ended with one."""
        last = self.turns[-1].action if self.turns else None
        return last.text if isinstance(last, Answer) else None

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Every tool call the policy made, in order."""
        return [t.action for t in self.turns if isinstance(t.action, ToolCall)]

    @property
    def tool_errors(self) -> list[str]:
        """Every environment fault the tools reported during the episode."""
        return [e for t in self.turns if t.observation for e in t.observation.errors]

    @property
    def policy_text(self) -> str:
        """Only what the policy wrote (with its forced prefixes); the reward reads this, never observations."""
        return "".join(t.text for t in self.turns)


@dataclass(frozen=True)
class Page:
    """A fetched document: final URL after redirects, status, content type, and decoded text (HTML or plain)."""

    url: str
    status: int
    content_type: str
    text: str
