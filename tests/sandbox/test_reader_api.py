"""The sandbox's OpenAI-compatible reader: the real LLMReader through it reads exactly what ExtractiveReader reads,
and it answers the official reader prompt and the request shapes real clients send."""

from __future__ import annotations

import re

import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from researchrl.prompts import READER_PROMPT
from researchrl.sandbox.config import shared_data_dir
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
        ({"model": "m", "messages": []}, "no messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}, "reader prompt"),
        ("not a chat request", "no messages"),
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


# ---------------------------------------------------------------- the official prompt and what real clients send

REFERENCE = shared_data_dir().parent / "REFERENCE-deepresearcher.md"
LILU = ReadRequest("If Gallu is a demon Lilu is what?", "Lilu mythology", "<sub_question>Gallu</sub_question>\n"
                   "<useful_info>Gallu is a demon.</useful_info>", "A lilu or lilû is a masculine Akkadian word for a "
                   "spirit, related to Alû, demon. Lilu is not Gallu.", 2, 3)


def official_prompt(req: ReadRequest) -> str:
    """The official reader prompt for `req`, built from the reference's §3.6 as written there: its quoted (abridged)
    instructions, then each tagged field in the reference's own spelling, the unclosed <current_sub_question> included."""
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} is not on this machine")
    text = REFERENCE.read_text(encoding="utf-8")
    section = text[text.index("### 3.6"):text.index("Output parsing:", text.index("### 3.6"))]
    quote = " ".join(line.removeprefix("> ") for line in section.splitlines() if line.startswith("> "))
    fields = re.findall(r"`(<[^`]+>)`", section.split("followed by", 1)[1])
    ending = re.search(r'ending "([^"]+)"', section)
    assert len(fields) == 4 and "<current_sub_question>…<current_sub_question>" in fields and ending
    values = iter([req.question, req.memory, req.sub_query, req.segment])
    filled = [re.sub("…", lambda _: next(values), field) for field in fields]
    filled[-1] = filled[-1].replace(">i<", f">{req.page_index}<").replace(">n<", f">{req.total_pages}<")
    return "\n\n".join([quote.strip('"'), *filled, ending[1]])


async def test_the_official_prompt_is_read_like_ours(sandbox: SandboxServer) -> None:
    official = READER_PROMPT.replace("</current_sub_question>", "<current_sub_question>")  # the official copy's one difference
    prompts = [official_prompt(LILU), official.format(main_question=LILU.question, context_so_far=LILU.memory,
               sub_question=LILU.sub_query, page_index=2, total_pages=3, page_content=LILU.segment)]
    assert "<current_sub_question>\nLilu mythology\n<current_sub_question>" in prompts[1]
    expected = await ExtractiveReader().read(LILU)
    assert expected.info  # the segment has something to find
    async with openai.AsyncOpenAI(base_url=f"{sandbox.url}/v1", api_key="unused", max_retries=0) as client:
        for prompt in prompts:  # as the official client sends it: one user message, temperature 0.6
            assert parse_reader_prompt(prompt) == LILU
            completion = await client.chat.completions.create(
                model="qwen-plus", messages=[{"role": "user", "content": prompt}], temperature=0.6
            )
            assert parse_reply(completion.choices[0].message.content or "", 2, 3) == expected


def halves(text: str) -> list[dict[str, str]]:
    """The text as two content parts, cut in the middle."""
    return [{"type": "text", "text": text[: len(text) // 2]}, {"type": "text", "text": text[len(text) // 2 :]}]


@pytest.mark.parametrize(
    "messages",
    [
        lambda p: [{"role": "system", "content": "You are a reader."}, {"role": "user", "content": p}],
        lambda p: [{"role": "user", "content": halves(p)}],
        lambda p: [{"role": "system", "content": p}],
        lambda p: [{"role": "user", "content": p}, {"role": "assistant", "content": "<extracted_info>"}],
    ],
    ids=["with-system", "content-parts", "system-only", "prompt-not-last"],
)
async def test_the_request_shapes_real_clients_send_are_answered(sandbox: SandboxServer, messages) -> None:  # noqa: ANN001
    expected = await ExtractiveReader().read(LILU)
    for prompt in (render_reader_prompt(LILU), official_prompt(LILU)):
        body = {"model": "m", "messages": messages(prompt)}
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{sandbox.url}/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert parse_reply(response.json()["choices"][0]["message"]["content"], 2, 3) == expected


async def test_a_streaming_client_gets_the_same_reply(sandbox: SandboxServer) -> None:
    messages = [{"role": "user", "content": official_prompt(LILU)}]
    async with openai.AsyncOpenAI(base_url=f"{sandbox.url}/v1", api_key="unused", max_retries=0) as client:
        whole = await client.chat.completions.create(model="qwen-plus", messages=messages)
        stream = await client.chat.completions.create(model="qwen-plus", messages=messages, stream=True)
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop" and {c.id for c in chunks} == {whole.id}
