"""Baselines without tool calls: chain-of-thought only, and RAG (the question's top search snippets in the prompt)."""

from __future__ import annotations

from dataclasses import dataclass, field

from researchrl.agent.frame import ChatFrame
from researchrl.agent.protocols.deepresearcher import between
from researchrl.policy.base import Message
from researchrl.prompts import COT_INSTRUCTION, RAG_INSTRUCTION
from researchrl.types import Action, Answer, FormatError, Observation


@dataclass
class DirectProtocol:
    """One turn: think, then answer; `retrieval=True` is the RAG baseline (documents arrive as the question's context)."""

    retrieval: bool = False
    name: str = "cot"
    prefill: str = "<think>"
    stop: tuple[str, ...] = ()
    uses_tool_schemas: bool = False
    tool_names: tuple[str, ...] = field(default=())

    def messages(self, question: str, context: str = "") -> list[Message]:
        """Instruction as the system turn; the user turn holds the documents (RAG) and the question."""
        if not self.retrieval:
            return [Message("system", COT_INSTRUCTION), Message("user", question)]
        return [Message("system", RAG_INSTRUCTION), Message("user", f"Documents:\n{context}\n\nQuestion: {question}")]

    def parse(self, text: str) -> Action:
        """An answer after a closed think block; anything else (a tool call included) is a format error."""
        if "<answer>" not in text:
            return FormatError("no <answer>")
        if "</think>" not in text:
            return FormatError("answer without </think>")
        answer = between(text, "<answer>", "</answer>")
        return FormatError("unclosed <answer>") if answer is None else Answer(answer.strip())

    def observation_pieces(self, frame: ChatFrame, obs: Observation, ended_with_eos: bool) -> list[tuple[str, bool]]:
        """Never called: these protocols make no tool calls."""
        raise RuntimeError(f"the {self.name} baseline makes no tool calls")

    def observation_message(self, obs: Observation) -> Message:
        """Never called: these protocols make no tool calls."""
        raise RuntimeError(f"the {self.name} baseline makes no tool calls")
