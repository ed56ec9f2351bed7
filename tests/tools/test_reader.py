"""Readers: the extractive one on a real HotpotQA context, the LLM one against a loopback chat-completions server."""

from __future__ import annotations

import logging
import time

import pytest

from researchrl.tools.ranking import bm25_scores, split_sentences
from researchrl.tools.reader import ExtractiveReader, LLMReader, ReaderError, ReadRequest, ReadResult, parse_reply
from researchrl.web.retry import RetryPolicy

from .conftest import Reply, passage_texts

QUESTION = "If Gallu is a demon Lilu is what?"  # HotpotQA; gold "a spirit", supporting docs d5 and d9
LILU = "A lilu or lilû is a masculine Akkadian word for a spirit, related to Alû, demon."  # d5
ALU = "In Akkadian and Sumerian mythology, it is associated with other demons like Gallu and Lilu."  # from d9
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
KEY = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def context() -> str:
    """The question's ten HotpotQA context passages (d0..d9), one paragraph each: a realistic page segment."""
    texts = passage_texts({f"d{i}" for i in range(10)})
    return "\n\n".join(texts[f"d{i}"] for i in range(10))


def request(segment: str, memory: str = "", page: int = 1, total: int = 3) -> ReadRequest:
    return ReadRequest(QUESTION, "Lilu mythology", memory, segment, page, total)


async def test_extractive_reader_picks_the_supporting_sentences(context: str) -> None:
    result = await ExtractiveReader(max_sentences=2).read(request(context))
    assert split_sentences(result.info) == [ALU, LILU]
    assert result.page_down


async def test_extractive_reader_skips_what_memory_already_holds(context: str) -> None:
    memory = f"<sub_question>Lilu mythology</sub_question>\n<useful_info>{LILU}</useful_info>\n"
    result = await ExtractiveReader(max_sentences=2).read(request(context, memory))
    assert LILU not in result.info
    assert ALU in result.info


async def test_extractive_reader_stops_on_a_segment_with_nothing_new(context: str) -> None:
    reader = ExtractiveReader()
    everything = (await reader.read(request(context))).info
    again = await reader.read(request(LILU + " " + ALU, memory=everything))
    assert again == type(again)(info="", page_down=False)
    unrelated = await reader.read(request("The weather was mild. Rain fell in April."))
    assert unrelated.info == "" and not unrelated.page_down


async def test_extractive_reader_does_not_page_past_the_last_segment(context: str) -> None:
    result = await ExtractiveReader().read(request(context, page=3, total=3))
    assert result.info and not result.page_down


def test_bm25_prefers_more_and_rarer_query_terms() -> None:
    docs = [["lilu", "spirit", "demon"], ["lilu", "tribe"], ["weather"]]
    scores = bm25_scores(["lilu", "demon"], docs)
    assert scores[0] > scores[1] > scores[2] == 0.0


@pytest.mark.parametrize(
    ("reply", "info", "page_down"),
    [
        ("<extracted_info>Lilu is a spirit.</extracted_info><page_down>yes</page_down>", "Lilu is a spirit.", True),
        ("<extracted_info>x</extracted_info><page_down>Yes</page_down>", "x", True),
        ("<EXTRACTED_INFO>x</EXTRACTED_INFO><Page_Down> YES. </Page_Down>", "x", True),
        ("<extracted_info>x</extracted_info><page_down>no</page_down>", "x", False),
        ("<extracted_info>Town is <5 km away, <b>map</b>.</extracted_info>", "Town is <5 km away, <b>map</b>.", False),
        ("<extracted_info>Depth <10 m\n<page_down>yes", "Depth <10 m", True),  # unclosed tags
        ("<think><extracted_info>draft</extracted_info></think><extracted_info>final</extracted_info>", "final", False),
        ("<extracted_info></extracted_info><page_down>yes, the nose is not yet</page_down>", "", True),
        ("<page_down>no</page_down>", "", False),  # one tag is enough: nothing new, stop
    ],
)
def test_parse_reply(reply: str, info: str, page_down: bool) -> None:
    assert parse_reply(reply, page_index=1, total_pages=2) == ReadResult(info, page_down)


@pytest.mark.parametrize(
    "reply",
    ["I cannot help with that.", "", "<think><extracted_info>draft</extracted_info></think>", "<short_summary>x</short_summary>"],
)
def test_a_reply_with_neither_tag_is_unparseable(reply: str) -> None:
    with pytest.raises(ReaderError, match="neither <extracted_info> nor <page_down>") as err:
        parse_reply(reply, page_index=1, total_pages=2)
    assert err.value.kind == "unparseable"


def test_parse_reply_never_pages_past_the_last_page() -> None:
    assert not parse_reply("<extracted_info>x</extracted_info><page_down>yes</page_down>", 2, 2).page_down


@pytest.fixture
async def reader(tool_site, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("READER_API_KEY_TEST", KEY)
    base_url = f"{tool_site.base_url}/v1"
    reader = LLMReader(base_url, "reader-test", api_key_env="READER_API_KEY_TEST", timeout=5, retry=FAST)
    yield reader
    await reader.aclose()


async def test_llm_reader_prompt_and_parse(tool_site, reader: LLMReader) -> None:
    reply = "<extracted_info>Lilu: a spirit, distance <5 km</extracted_info><page_down>Yes</page_down>"
    tool_site.replies = [Reply(reply)]
    result = await reader.read(request("A lilu is a spirit.", memory="<useful_info>old</useful_info>", page=2, total=3))
    assert result.info == "Lilu: a spirit, distance <5 km" and result.page_down
    ((headers, body),) = tool_site.chat_requests
    assert headers["authorization"] == f"Bearer {KEY}"
    assert body["model"] == "reader-test" and body["temperature"] == 0.6 and "max_tokens" not in body
    prompt = body["messages"][0]["content"]
    assert f"<main_question>\n{QUESTION}\n</main_question>" in prompt
    assert "<current_sub_question>\nLilu mythology\n</current_sub_question>" in prompt
    assert "<page_index>2</page_index>" in prompt and "<total_page_number>3</total_page_number>" in prompt
    assert "<context_so_far>\n<useful_info>old</useful_info>\n</context_so_far>" in prompt
    assert "<current_page_content>A lilu is a spirit.</current_page_content>" in prompt


async def test_llm_reader_retries_a_500(tool_site, reader: LLMReader) -> None:
    tool_site.replies = [Reply(status=500), Reply("<extracted_info>ok</extracted_info><page_down>no</page_down>")]
    result = await reader.read(request("text"))
    assert result.info == "ok" and not result.page_down
    assert len(tool_site.chat_requests) == 2


async def test_llm_reader_gives_up_after_bounded_attempts(tool_site, reader: LLMReader) -> None:
    tool_site.replies = [Reply(status=503)] * 5
    with pytest.raises(ReaderError) as err:
        await reader.read(request("text"))
    assert err.value.kind == "http_503"
    assert len(tool_site.chat_requests) == FAST.attempts


@pytest.mark.parametrize("reply", [Reply("Sure! Here is what I found: nothing."), Reply(""), Reply(raw="<p>x</p>")])
async def test_llm_reader_garbage_is_an_unparseable_error_asked_once(tool_site, reader: LLMReader, reply: Reply) -> None:
    tool_site.replies = [reply]
    started = time.monotonic()
    with pytest.raises(ReaderError) as err:
        await reader.read(request("text"))
    assert err.value.kind == "unparseable"
    assert len(tool_site.chat_requests) == 1 and time.monotonic() - started < 2  # the model answered: no retry


async def test_llm_reader_sends_its_max_tokens(tool_site, monkeypatch: pytest.MonkeyPatch) -> None:
    from researchrl.environment import EnvConfig, _reader

    monkeypatch.setenv("READER_API_KEY_TEST", KEY)
    env = EnvConfig(reader="llm", reader_url=f"{tool_site.base_url}/v1", reader_model="reader-test",
                    reader_key_env="READER_API_KEY_TEST", reader_max_tokens=64)
    reader = _reader(env)
    tool_site.replies = [Reply("<extracted_info>x</extracted_info><page_down>no</page_down>")]
    assert (await reader.read(request("text"))).info == "x"
    await reader.aclose()
    ((_, body),) = tool_site.chat_requests
    assert body["max_tokens"] == 64 and "max_tokens=64" in reader.cache_id


async def test_llm_reader_timeout_is_bounded(tool_site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READER_API_KEY_TEST", KEY)
    reader = LLMReader(
        f"{tool_site.base_url}/v1", "reader-test", api_key_env="READER_API_KEY_TEST", timeout=0.2,
        retry=RetryPolicy(attempts=2, base_delay=0.01),
    )
    tool_site.replies = [Reply("late", delay=1.0)] * 2
    started = time.monotonic()
    with pytest.raises(ReaderError) as err:
        await reader.read(request("text"))
    assert err.value.kind == "timeout"
    assert time.monotonic() - started < 1.5
    await reader.aclose()


async def test_api_key_never_appears_in_errors_or_logs(tool_site, reader: LLMReader, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    tool_site.replies = [Reply(status=401)]  # the server echoes the Authorization header in its error body
    with pytest.raises(ReaderError) as err:
        await reader.read(request("text"))
    assert err.value.kind == "auth"
    assert len(tool_site.chat_requests) == 1  # auth errors are not retried
    assert KEY not in str(err.value) and KEY not in repr(err.value) and KEY not in repr(reader)
    assert err.value.__cause__ is None and err.value.__context__ is None  # the provider error is not chained
    assert KEY not in caplog.text


def fragments(secret: str, size: int = 8) -> list[str]:
    """Every `size`-character piece of the secret: none may survive anywhere in an error."""
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


@pytest.mark.parametrize("key", [KEY, "live0123456789ABCDEFGHIJKLMN"])  # the second is not key-shaped
@pytest.mark.parametrize("straddle", [False, True])
@pytest.mark.parametrize("status", [401, 503])
async def test_a_provider_echoing_the_key_never_puts_it_in_the_reader_error(
    tool_site, monkeypatch: pytest.MonkeyPatch, key: str, straddle: bool, status: int  # noqa: ANN001
) -> None:
    monkeypatch.setenv("READER_API_KEY_TEST", key)
    reader = LLMReader(f"{tool_site.base_url}/v1", "reader-test", api_key_env="READER_API_KEY_TEST", timeout=5, retry=FAST)
    body = ("x" * 188 if straddle else "") + f"{key} is not a valid key"  # straddling: 12 key characters before the cut
    assert not straddle or (key[:12] in body[:200] and key not in body[:200])
    tool_site.replies = [Reply(status=status, raw=body)] * FAST.attempts
    with pytest.raises(ReaderError) as err:
        await reader.read(request("text"))
    await reader.aclose()
    assert tool_site.chat_requests[0][0]["authorization"] == f"Bearer {key}"
    assert f"HTTP {status}" in str(err.value) and "[redacted]" in str(err.value)
    text = f"{err.value} {err.value!r} {err.value.args}"
    assert not [piece for piece in fragments(key) if piece in text], text
    assert err.value.__cause__ is None and err.value.__context__ is None
