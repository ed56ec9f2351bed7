"""Parsing policy turns: the official rules as a table, and any text gives a typed result."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from researchrl.agent.protocols import get_protocol
from researchrl.agent.protocols.deepresearcher import DeepResearcherProtocol
from researchrl.agent.protocols.search_r1 import SearchR1Protocol
from researchrl.types import Answer, FormatError, ToolCall

DR = DeepResearcherProtocol(date="2026-11-22")


def call(name: str, arguments: object) -> str:
    return f"<think>plan</think>\n<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>x</think>\n<answer> a spirit </answer>", Answer("a spirit")),
        ("<think>x</think><answer>first</answer><answer>second</answer>", Answer("first")),
        (call("web_search", {"query": ["Lilu", " Gallu demon "]}), ToolCall("web_search", {"query": ["Lilu", "Gallu demon"]})),
        (call("browse_webpage", {"url_list": ["http://a/b"]}), ToolCall("browse_webpage", {"url_list": ["http://a/b"]})),
        # the answer branch wins over a tool call, as in the official parser
        ("<think>x</think>" + call("web_search", {"query": ["q"]})[16:] + "<answer>y</answer>", Answer("y")),
        ("<think>x<answer>y</answer>", FormatError("answer without </think>")),
        ("<think>x</think><answer>y", FormatError("unclosed <answer>")),
        ("<think>x</think><tool_call>{}", FormatError("unclosed <tool_call>")),
        ("<think>x<tool_call>{}</tool_call>", FormatError("tool call without </think>")),
        ("<think>x</think><tool_call>{'name': 'web_search'}</tool_call>", FormatError("tool call is not valid JSON")),
        ("<think>x</think><tool_call>[1, 2]</tool_call>", FormatError("tool call needs 'name' and 'arguments'")),
        (call("python", {"code": "1"}), FormatError("unknown tool 'python'")),
        (call("web_search", {"query": "a string"}), FormatError("web_search needs 'query' as a list")),
        (call("web_search", {"query": []}), FormatError("web_search 'query' must be a non-empty list of non-empty strings")),
        (call("web_search", {"query": [3]}), FormatError("web_search 'query' must be a non-empty list of non-empty strings")),
        (call("browse_webpage", {"urls": ["x"]}), FormatError("browse_webpage needs 'url_list' as a list")),
        ("<think>I just talk</think> The answer is 4.", FormatError("no <answer> or <tool_call>")),
        ("", FormatError("no <answer> or <tool_call>")),
    ],
)
def test_deepresearcher_parse_table(text: str, expected: object) -> None:
    assert DR.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>x</think><search> Lilu mythology </search>", ToolCall("web_search", {"query": ["Lilu mythology"]})),
        ("<think>x</think><answer>a spirit</answer>", Answer("a spirit")),
        ("<search>q1</search> then <answer>a</answer>", ToolCall("web_search", {"query": ["q1"]})),
        ("<answer>a</answer><search>q1</search>", Answer("a")),
        ("<search>  </search>", FormatError("empty <search>")),
        ("<search>unclosed", FormatError("no <search> or <answer>")),
    ],
)
def test_search_r1_parse_table(text: str, expected: object) -> None:
    assert SearchR1Protocol().parse(text) == expected


def test_system_prompt_is_the_papers_with_the_date() -> None:
    system, user = DR.messages("Who?")
    assert system.content.startswith("## Background information \n* Today is 2026-11-22\n* You are Deep AI Research Assistant")
    assert "* A web search tool to help you perform google search. \n" in system.content
    assert system.content.endswith("If this is a yes-or-no question, you should only answer yes or no.")
    assert (user.role, user.content) == ("user", "Who?")


def test_unknown_protocol_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="deepresearcher"):
        get_protocol("react")


TAGS = st.sampled_from(
    ["<think>", "</think>", "<answer>", "</answer>", "<tool_call>", "</tool_call>", "<search>", "</search>", "{", "}",
     '"name"', '"arguments"', '"web_search"', '"query"', "[", "]", ":", ",", '"url_list"', "null", "1e999"]
)
TEXT = st.lists(st.one_of(st.text(max_size=12), TAGS), max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_any_text_parses_to_a_typed_action(text: str) -> None:
    for protocol in (DR, SearchR1Protocol()):
        action = protocol.parse(text)
        assert isinstance(action, (Answer, ToolCall, FormatError))
        if isinstance(action, ToolCall):
            key = "query" if action.name == "web_search" else "url_list"
            assert action.arguments[key] and all(isinstance(x, str) and x for x in action.arguments[key])


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=10))
def test_any_json_in_a_tool_call_parses_to_a_typed_action(payload: object) -> None:
    action = DR.parse(f"<think>t</think><tool_call>{json.dumps(payload)}</tool_call>")
    assert isinstance(action, (ToolCall, FormatError))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(name=JSON | st.sampled_from(["web_search", "browse_webpage"]), arguments=JSON)
def test_any_name_and_arguments_parse_to_a_typed_action(name: object, arguments: object) -> None:
    # a real GRPO rollout once wrote {"name": [...], ...}: a list name must be a format error, not a TypeError
    action = DR.parse(call(name, arguments))  # type: ignore[arg-type]
    assert isinstance(action, (ToolCall, FormatError))
