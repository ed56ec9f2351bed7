"""The browsing agent's reader: given one page segment and the memory so far, keep what is new and decide to read on.

Two readers share one contract (`Reader.read(ReadRequest) -> ReadResult`):
- `ExtractiveReader`: no model; ranks the segment's sentences against the question (BM25). Deterministic.
- `LLMReader`: the paper's reading agent, on any OpenAI-compatible chat endpoint.
An endpoint that keeps failing raises ReaderError (an environment fault the browse tool reports), and so does a
reply holding neither <extracted_info> nor <page_down>: kind `unparseable`, not retried (the model did answer), so
the segment yields nothing and the browse tool counts it as `reader_unparseable`.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Protocol

import openai

from researchrl.errors import EnvironmentFault
from researchrl.prompts import READER_PROMPT
from researchrl.tools.ranking import new_sentences, rank_sentences
from researchrl.web.cache import endpoint_id
from researchrl.web.chat import ChatError, complete, openai_client
from researchrl.web.redact import excerpt
from researchrl.web.retry import RetryPolicy


@dataclass(frozen=True)
class ReadRequest:
    """One segment to read: the question, the search query it came from, the memory so far, and where we are."""

    question: str
    sub_query: str
    memory: str  # rendered "context so far" (empty when nothing is known yet)
    segment: str
    page_index: int  # 1-based, as the reader prompt shows it
    total_pages: int
    url: str = ""  # the page the segment came from (cache keys and replay messages name it)
    ranked: tuple[str, ...] | None = None  # rank_sentences of this segment, question and sub-query, done ahead by
    # the extraction pool for the extractive reader (None: it ranks them itself); other readers ignore it


@dataclass(frozen=True)
class ReadResult:
    """What the reader kept from a segment ("" for nothing new) and whether to read the next one."""

    info: str
    page_down: bool


class ReaderError(EnvironmentFault):
    """The reader could not read for an environment reason (`kind`: timeout, connect, auth, http_429, ..., unparseable)."""

    def __init__(self, kind: str, message: str):
        super().__init__(kind, f"{kind}: {message}")


class Reader(Protocol):
    """Reads one segment; raises ReaderError only for environment faults."""

    async def read(self, req: ReadRequest) -> ReadResult:
        """Extract what is new in `req.segment` and decide whether to page down."""
        ...


# ---------------------------------------------------------------- extractive (no model; its ranking: tools/ranking.py)


@dataclass(frozen=True)
class ExtractiveReader:
    """A model-free reader: the segment's sentences sharing terms with the question or sub-query, best first.

    Score = BM25 of the sentence (sentences of the segment as the corpus) for the distinct non-stopword
    terms of question + sub-query. Kept: up to `max_sentences` with score > 0 that are not already in
    memory. It pages down only when this segment added something and more segments remain.
    """

    max_sentences: int = 5

    async def read(self, req: ReadRequest) -> ReadResult:
        """Pick the new, relevant sentences of the segment (ranked here unless the request brings them ranked)."""
        ranked = req.ranked if req.ranked is not None else rank_sentences(req.segment, req.question, req.sub_query)
        info = " ".join(new_sentences(ranked, req.memory, self.max_sentences))
        return ReadResult(info=info, page_down=bool(info) and req.page_index < req.total_pages)


# ---------------------------------------------------------------- LLM reader

_READER_TAGS = ("extracted_info", "page_down", "short_summary")
_THINK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)


def reply_tag(reply: str, tag: str) -> str | None:
    """Text inside <tag>…</tag> (case-insensitive); unclosed, it runs to the next reply tag or the end.

    Only the reader's own tags end an unclosed section, so content such as "<5 km" or "<b>" is kept
    (the official regex stopped at any "<" followed by a word character).
    """
    opening = re.search(rf"<{tag}>", reply, re.IGNORECASE)
    if opening is None:
        return None
    rest = reply[opening.end() :]
    ends = [m.start() for t in _READER_TAGS if (m := re.search(rf"</?{t}>", rest, re.IGNORECASE))]
    return rest[: min(ends, default=len(rest))].strip()


def parse_reply(reply: str, page_index: int, total_pages: int) -> ReadResult:
    """The reader model's reply as a ReadResult; ReaderError("unparseable") when it holds neither of the two tags."""
    reply = _THINK.sub("", reply or "")
    extracted, page_down = reply_tag(reply, "extracted_info"), reply_tag(reply, "page_down")
    if extracted is None and page_down is None:
        raise ReaderError("unparseable", f"the reply holds neither <extracted_info> nor <page_down>: {excerpt(reply)}")
    info = extracted or ""
    verdict = (page_down or "").lower()
    wants_more = re.match(r"\W*yes\b", verdict) is not None
    return ReadResult(info=info, page_down=wants_more and page_index < total_pages)


def render_reader_prompt(req: ReadRequest) -> str:
    """The paper's reader prompt filled in for one segment."""
    return READER_PROMPT.format(
        main_question=req.question,
        context_so_far=req.memory,
        sub_question=req.sub_query,
        page_index=req.page_index,
        total_pages=req.total_pages,
        page_content=req.segment,
    )


@dataclass
class LLMReader:
    """The paper's reading agent (official: qwen-plus, temperature 0.6) on any OpenAI-compatible endpoint.

    The API key is read from the environment variable `api_key_env` (a placeholder when unset, for local
    servers without auth); error messages carry the failure kind, the status and the provider's text with
    the key redacted (web/chat.py).
    """

    base_url: str
    model: str
    api_key_env: str = "READER_API_KEY"
    temperature: float = 0.6  # official reading agent temperature
    timeout: float = 60.0  # seconds per network operation; a whole request gets twice that
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_tokens: int | None = None  # official: no limit
    _client: openai.AsyncOpenAI = field(init=False, repr=False)
    _rng: random.Random = field(init=False, repr=False, default_factory=random.Random)

    def __post_init__(self) -> None:
        self._client = openai_client(self.base_url, self.api_key_env, self.timeout)

    @property
    def cache_id(self) -> str:
        """Who answers, for cache keys: model, endpoint, sampling settings and a short hash of the prompt template."""
        template = hashlib.sha256(READER_PROMPT.encode()).hexdigest()[:12]
        endpoint = endpoint_id(self.base_url)
        return f"llm:{self.model}@{endpoint}:t={self.temperature}:max_tokens={self.max_tokens}:prompt={template}"

    async def read(self, req: ReadRequest) -> ReadResult:
        """Ask the model about one segment; bounded retries, then ReaderError (an unparseable reply: at once)."""
        messages = [{"role": "user", "content": render_reader_prompt(req)}]
        try:
            reply = await complete(
                self._client, self.model, messages, temperature=self.temperature, timeout=self.timeout * 2,
                retry=self.retry, max_tokens=self.max_tokens, rng=self._rng,
            )
        except ChatError as err:
            failure = ReaderError(err.kind, f"reader {err}")
        else:
            return parse_reply(reply, req.page_index, req.total_pages)
        raise failure

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()
