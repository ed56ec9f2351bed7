"""The DeepResearcher protocol: <think> then <answer> or a JSON <tool_call>; tool results as a <tool_response> user turn."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from researchrl.agent.frame import ChatFrame
from researchrl.policy.base import Message
from researchrl.prompts import deepresearcher_system
from researchrl.types import Action, Answer, FormatError, Observation, ToolCall

ARGUMENT_KEY = {"web_search": "query", "browse_webpage": "url_list"}


def between(text: str, open_tag: str, close_tag: str) -> str | None:
    """Text between the first `open_tag` and the first `close_tag` after it."""
    start = text.find(open_tag)
    if start < 0:
        return None
    end = text.find(close_tag, start + len(open_tag))
    return None if end < 0 else text[start + len(open_tag) : end]


def parse_tool_call(body: str) -> ToolCall | FormatError:
    """Validate the JSON inside <tool_call> against the two tool schemas (official rules, plus string-typed items)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return FormatError("tool call is not valid JSON")
    if not isinstance(data, dict) or "name" not in data or "arguments" not in data:
        return FormatError("tool call needs 'name' and 'arguments'")
    name, arguments = data["name"], data["arguments"]
    if not isinstance(name, str) or name not in ARGUMENT_KEY:  # a list or object name must not crash the lookup
        return FormatError(f"unknown tool {str(name)[:40]!r}")
    key = ARGUMENT_KEY[name]
    if not isinstance(arguments, dict) or not isinstance(arguments.get(key), list):
        return FormatError(f"{name} needs '{key}' as a list")
    items = arguments[key]
    if not items or not all(isinstance(item, str) and item.strip() for item in items):
        return FormatError(f"{name} '{key}' must be a non-empty list of non-empty strings")
    return ToolCall(name, {key: [item.strip() for item in items]})


@dataclass
class DeepResearcherProtocol:
    """The paper's protocol; the released GAIR/DeepResearcher-7b runs under it unchanged."""

    date: str | None = None
    name: str = "deepresearcher"
    prefill: str = "<think>"
    stop: tuple[str, ...] = ()
    uses_tool_schemas: bool = True
    tool_names: tuple[str, ...] = field(default=("web_search", "browse_webpage"))

    def messages(self, question: str, context: str = "") -> list[Message]:
        """System prompt (with today's date) and the raw question, as the official code sends them."""
        if context:
            raise ValueError("the agent finds its own documents: question context is for the rag baseline")
        return [Message("system", deepresearcher_system(self.date)), Message("user", question)]

    def parse(self, text: str) -> Action:
        """The official parse order: an answer wins over a tool call; anything else is a format error."""
        if "<think>" in text and "<answer>" in text:
            if "</think>" not in text:
                return FormatError("answer without </think>")
            answer = between(text, "<answer>", "</answer>")
            return FormatError("unclosed <answer>") if answer is None else Answer(answer.strip())
        if "<think>" in text and "<tool_call>" in text:
            if "</think>" not in text:
                return FormatError("tool call without </think>")
            body = between(text, "<tool_call>", "</tool_call>")
            return FormatError("unclosed <tool_call>") if body is None else parse_tool_call(body)
        return FormatError("no <answer> or <tool_call>")

    def observation_pieces(self, frame: ChatFrame, obs: Observation, ended_with_eos: bool) -> list[tuple[str, bool]]:
        """Close the assistant turn, add a user turn with <tool_response>, reopen the assistant with <think>."""
        head = frame.close_after(ended_with_eos) + frame.user_open + "<tool_response>\n"
        tail = "\n</tool_response>" + frame.user_close + frame.assistant_open + self.prefill
        return [(head, True), (obs.text, False), (tail, True)]

    def observation_message(self, obs: Observation) -> Message:
        """The tool result as Qwen's template renders a tool message."""
        return Message("user", f"<tool_response>\n{obs.text}\n</tool_response>")
