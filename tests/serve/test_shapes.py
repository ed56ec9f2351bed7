"""The OpenAI shapes of served episodes: request checks, thinking, one-line observations, and sources."""

from __future__ import annotations

import pytest

from researchrl.agent.loop import AgentConfig
from researchrl.policy.base import Sampling
from researchrl.records import read_urls, sources
from researchrl.serve.shapes import ApiError, parse_request, summarize, thinking
from researchrl.types import Answer, Observation, Question, ToolCall, Trajectory, Turn

AGENT = AgentConfig(max_turns=6, sampling=Sampling(temperature=0.0, max_new_tokens=256))


def parse(**body: object):  # noqa: ANN201
    return parse_request({"messages": [{"role": "user", "content": "q"}], **body}, AGENT, "agent")


def test_the_last_user_message_is_the_question_and_request_settings_stay_within_the_servers() -> None:
    body = {"model": "agent", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": None}, {"role": "user", "content": [{"type": "text", "text": " Who is Lilu? "}]}]}
    request = parse_request(body, AGENT, "agent")
    assert request.question == "Who is Lilu?" and not request.stream
    chosen = parse(max_tokens=64, temperature=0.7, top_p=0.9, max_turns=3, seed=5, stream=True,
                   stream_options={"include_usage": True})
    assert (chosen.agent.sampling.max_new_tokens, chosen.agent.sampling.temperature, chosen.agent.sampling.top_p) == (64, 0.7, 0.9)
    assert (chosen.agent.max_turns, chosen.agent.seed, chosen.stream, chosen.include_usage) == (3, 5, True, True)
    assert parse().agent == AGENT  # nothing asked: the server's own settings


@pytest.mark.parametrize(("body", "param"), [
    ({"max_tokens": 257}, "max_tokens"),  # more than the server's tokens per turn
    ({"max_turns": 7}, "max_turns"),
    ({"max_turns": True}, "max_turns"),  # a boolean is not a number here
    ({"temperature": "0"}, "temperature"),
    ({"n": 2}, "n"),
    ({"stream": "yes"}, "stream"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages"),
    ({"messages": [{"role": "robot", "content": "q"}]}, "messages[0]"),
    ({"messages": "q"}, "messages"),
])
def test_malformed_requests_are_400s_naming_the_parameter(body: dict, param: str) -> None:
    with pytest.raises(ApiError) as err:
        parse(**body)
    assert err.value.status == 400 and err.value.body["error"]["param"] == param
    assert err.value.body["error"]["type"] == "invalid_request_error"


def test_another_model_name_is_a_404_and_a_non_object_body_a_400() -> None:
    with pytest.raises(ApiError) as err:
        parse(model="gpt-4o")
    assert err.value.status == 404 and err.value.body["error"]["code"] == "model_not_found"
    with pytest.raises(ApiError) as err:
        parse_request([1, 2], AGENT, "agent")
    assert err.value.status == 400


def test_thinking_is_the_think_block_or_the_text_before_the_next_tag() -> None:
    assert thinking("<think>\nPlan it.\n</think>\n<answer>x</answer>") == "Plan it."
    assert thinking("<think>no close <tool_call>{}</tool_call>") == "no close"
    assert thinking("<answer>x</answer>") == ""


def test_an_observation_is_summarized_in_one_line() -> None:
    search = repr([{"search_query": "Lilu", "web_page_info_list": [{"title": "t", "url": "u", "quick_summary": "s"}] * 3}])
    assert summarize(Observation("web_search", search)) == "3 results for 'Lilu'"
    browse = repr([{"url": "http://a", "information": [{"page_number": 0, "page_summary": "f"}] * 2},
                   {"url": "http://b", "information": [], "error": "http_404"}])
    assert summarize(Observation("browse_webpage", browse, ("http_404",))) == "http://a: 2 facts; http://b: http_404"
    assert summarize(Observation("x", "Error: unknown tool 'x'.\nmore", ("unknown_tool",))) == \
        "Error: unknown tool 'x'.; [errors: unknown_tool]"


def test_sources_are_the_pages_a_browse_read_something_from_even_when_the_observation_was_cut() -> None:
    read = {"url": "http://a/Lilu", "information": [{"page_number": 0, "page_summary": "Lilu is a demon " * 50}]}
    failed = {"url": "http://b", "information": [], "error": "http_404"}
    nothing = {"url": "http://c", "information": []}
    text = repr([failed, read, nothing])
    turns = [
        Turn("", [], None, "eos", ToolCall("browse_webpage", {"url_list": ["http://b", "http://a/Lilu", "http://c"]})),
        Turn("", [], None, "eos", ToolCall("browse_webpage", {"url_list": ["http://a/Lilu"]})),
        Turn("", [], None, "eos", Answer("a demon")),
    ]
    turns[0].observation = Observation("browse_webpage", text[:200] + " …[truncated]", ("http_404",))
    turns[1].observation = Observation("browse_webpage", text)
    trajectory = Trajectory(Question("q", "?", ()), [], [], [], None, turns, "answer")
    assert sources(trajectory) == ["http://a/Lilu"]  # once, though read twice; the cut observation still counted
    assert read_urls(text[:200]) == ["http://a/Lilu"] and read_urls("Error: url_list must be a list") == []
