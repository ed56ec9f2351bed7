"""Token bookkeeping for one episode: the only place that assigns loss-mask values (policy-sampled = 1, else 0)."""

from __future__ import annotations

import functools

from researchrl.agent.frame import ChatFrame, derive_frame
from researchrl.agent.protocols import TurnProtocol
from researchrl.policy.base import ChatTokenizer, Message, Sample
from researchrl.prompts import tools_block


class Transcript:
    """Append-only record of an episode's tokens; each append extends the previous context, never rewrites it."""

    def __init__(self, prompt_ids: list[int], messages: list[Message]):
        self.prompt_ids = list(prompt_ids)
        self.completion_ids: list[int] = []
        self.mask: list[int] = []
        self.logprobs: list[float | None] = []
        self.messages = list(messages)

    @property
    def ids(self) -> list[int]:
        """The full context the policy continues next."""
        return self.prompt_ids + self.completion_ids

    def add_sampled(self, sample: Sample, text: str) -> None:
        """Tokens the policy sampled: trained on (mask 1), with their logprobs."""
        self.completion_ids += sample.token_ids
        self.mask += [1] * len(sample.token_ids)
        self.logprobs += sample.logprobs if sample.logprobs is not None else [None] * len(sample.token_ids)
        self.messages.append(Message("assistant", text))

    def add_forced(self, ids: list[int], message: Message | None) -> None:
        """Tokens we inserted (observations, turn wrappers, prefills): never trained on (mask 0)."""
        self.completion_ids += ids
        self.mask += [0] * len(ids)
        self.logprobs += [None] * len(ids)
        if message is not None:
            self.messages.append(message)


@functools.lru_cache(maxsize=16)
def frame_for(tokenizer: ChatTokenizer) -> ChatFrame:
    """The chat frame of a tokenizer, derived once."""
    return derive_frame(tokenizer)


# Stands in for retrieved documents while the chat template is applied, so they can be tokenized as untrusted text.
_CONTEXT_SLOT = "\x00researchrl-context\x00"


def opening_messages(protocol: TurnProtocol, question: str, tools: list[dict], context: str = "") -> list[Message]:
    """The protocol's first messages, with tool schemas in the system text (for chat-only endpoints)."""
    messages = protocol.messages(question, context)
    if protocol.uses_tool_schemas and messages and messages[0].role == "system":
        messages[0] = Message("system", messages[0].content + tools_block(tools))
    return messages


def start(
    tokenizer: ChatTokenizer, protocol: TurnProtocol, question: str, tools: list[dict], context: str = ""
) -> Transcript:
    """Prompt tokens: the chat template over the opening messages, the generation header, and the forced prefill.

    Retrieved documents (`context`, RAG baseline) are web text: they are tokenized as untrusted pieces.
    """
    schemas = tools if protocol.uses_tool_schemas else None
    slot = _CONTEXT_SLOT if context else ""
    text = tokenizer.render_chat(protocol.messages(question, slot), schemas, add_generation_prompt=True) + protocol.prefill
    head, _, tail = text.partition(slot) if slot else (text, "", "")
    ids = encode_pieces(tokenizer, [(head, True), (context, False), (tail, True)])
    return Transcript(ids, opening_messages(protocol, question, tools, context))


def encode_pieces(tokenizer: ChatTokenizer, pieces: list[tuple[str, bool]]) -> list[int]:
    """Tokenize each piece once; untrusted pieces (web text) cannot produce special tokens."""
    ids: list[int] = []
    for text, trusted in pieces:
        if text:
            ids += tokenizer.encode(text, trusted=trusted)
    return ids
