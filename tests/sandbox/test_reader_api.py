"""The sandbox's OpenAI-compatible reader: the real LLMReader through it reads exactly what ExtractiveReader reads."""

from __future__ import annotations

import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from researchrl.sandbox.reader_api import READER_MODEL, parse_reader_prompt, reply_text
from researchrl.sandbox.server import SandboxServer
from researchrl.tools.browse import render_memory
from researchrl.tools.pages import extract_text, segment
from researchrl.tools.reader import (
    ExtractiveReader,
    LLMReader,
    ReadRequest,
    ReadResult,
    parse_reply,
    render_reader_prompt,
)
from researchrl.types import Page

QUESTION = "Who founded al-Qaeda and where was it based?"
SUB_QUERY = "al-Qaeda founder Osama bin Laden"


def page_segments(sandbox: SandboxServer, title: str, size: int) -> list[str]:
    """A real sandbox article as the browse tool would see it: extracted, then cut into segments."""
    url = f"{sandbox.url}/wiki/{title}"
    text = extract_text(Page(url=url, status=200, content_type="text/html", text=httpx.get(url).text))
    return segment(text, size)


async def test_llm_reader_through_the_sandbox_reads_what_extractive_reads(sandbox: SandboxServer) -> None:
    segments = page_segments(sandbox, "Al-Qaeda", 3000)
    assert len(segments) >= 4
    llm = LLMReader(base_url=f"{sandbox.url}/v1", model=READER_MODEL)
    extractive = ExtractiveReader()
    memory: list[str] = []
    results = []
    try:
        for index, text in enumerate(segments, start=1):  # read on like the browse tool, memory growing
            req = ReadRequest(QUESTION, SUB_QUERY, render_memory(SUB_QUERY, memory), text, index, len(segments))
            result = await llm.read(req)
            assert result == await extractive.read(req), f"segment {index}"
            results.append(result)
            memory += [result.info] if result.info else []
    finally:
        await llm.aclose()
    assert any(r.info for r in results) and any(r.page_down for r in results) and not results[-1].page_down
    assert any("bin Laden" in r.info for r in results)


async def test_the_answer_is_a_chat_completion_with_usage(sandbox: SandboxServer) -> None:
    [text] = page_segments(sandbox, "Lilu_(mythology)", 40960)
    prompt = render_reader_prompt(ReadRequest("If Gallu is a demon Lilu is what?", "Lilu", "", text, 1, 1))
    async with openai.AsyncOpenAI(base_url=f"{sandbox.url}/v1", api_key="unused", max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="any-name", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]
        )
        models = await client.models.list()
    assert completion.object == "chat.completion" and completion.model == "any-name"
    assert completion.choices[0].finish_reason == "stop" and completion.choices[0].message.role == "assistant"
    reply = completion.choices[0].message.content or ""
    assert "<extracted_info>" in reply and "<page_down>no</page_down>" in reply and "<short_summary>" in reply
    assert "spirit" in parse_reply(reply, 1, 1).info
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 100 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert [m.id for m in models.data] == [READER_MODEL]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"model": "m", "messages": [{"role": "user", "content": "What is the capital of France?"}]}, "reader prompt"),
        ({"model": "m", "messages": []}, "no user message"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}, "does not stream"),
        ("not a chat request", "no user message"),
    ],
)
def test_requests_it_cannot_answer_are_openai_400s(sandbox: SandboxServer, body: object, message: str) -> None:
    response = httpx.post(f"{sandbox.url}/v1/chat/completions", json=body)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_a_body_that_is_not_json_is_a_400(sandbox: SandboxServer) -> None:
    response = httpx.post(f"{sandbox.url}/v1/chat/completions", content=b"{nope")
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


TEXT = st.text(st.characters(blacklist_characters="<", blacklist_categories=("Cs",)), max_size=300)


@settings(max_examples=200, deadline=None)
@given(TEXT, TEXT, TEXT, TEXT, st.integers(1, 500), st.integers(0, 500))
def test_the_prompt_parses_back_into_its_request(question: str, sub: str, memory: str, text: str, page: int,
                                                extra: int) -> None:
    req = ReadRequest(question, sub, memory, text, page, page + extra)
    assert parse_reader_prompt(render_reader_prompt(req)) == req


@given(st.text(max_size=200).filter(lambda s: "<" not in s and s == s.strip()), st.booleans(), st.integers(1, 9))
def test_the_reply_parses_back_into_its_result(info: str, more: bool, page: int) -> None:
    result = ReadResult(info, more and page < 9)
    assert parse_reply(reply_text(result), page, 9) == result
