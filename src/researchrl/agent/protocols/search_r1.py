"""Search-R1's tag protocol: <search>query</search> and <answer>…</answer>; results come back inline as <information>."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from researchrl.agent.frame import ChatFrame
from researchrl.policy.base import Message
from researchrl.prompts import SEARCH_R1_INSTRUCTION
from researchrl.types import Action, Answer, FormatError, Observation, ToolCall

_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)


@dataclass
class SearchR1Protocol:
    """Search-R1 (Jin et al., 2025): one search tool, observations appended inside the same assistant turn."""

    name: str = "search_r1"
    prefill: str = ""
    stop: tuple[str, ...] = ("</search>",)
    uses_tool_schemas: bool = False
    tool_names: tuple[str, ...] = field(default=("web_search",))

    def messages(self, question: str, context: str = "") -> list[Message]:
        """Search-R1 puts its instruction and the question in the user turn."""
        if context:
            raise ValueError("the agent finds its own documents: question context is for the rag baseline")
        return [Message("user", SEARCH_R1_INSTRUCTION + question.strip() + "\n")]

    def parse(self, text: str) -> Action:
        """The first complete <search> or <answer> block decides the action, as in Search-R1."""
        match = _ACTION.search(text)
        if match is None:
            return FormatError("no <search> or <answer>")
        kind, body = match.group(1), match.group(2).strip()
        if kind == "answer":
            return Answer(body)
        return ToolCall("web_search", {"query": [body]}) if body else FormatError("empty <search>")

    def observation_pieces(self, frame: ChatFrame, obs: Observation, ended_with_eos: bool) -> list[tuple[str, bool]]:
        """Results go inline; the assistant turn continues after them."""
        return [("\n\n<information>", True), (obs.text.strip(), False), ("</information>\n\n", True)]

    def observation_message(self, obs: Observation) -> Message:
        """For the record only: chat endpoints cannot continue an assistant turn, so chat policies refuse this protocol."""
        return Message("user", f"<information>{obs.text.strip()}</information>")
