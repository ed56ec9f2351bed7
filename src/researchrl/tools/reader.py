"""The browsing agent's reader: given one page segment and the memory so far, keep what is new and decide to read on.

Two readers share one contract (`Reader.read(ReadRequest) -> ReadResult`):
- `ExtractiveReader`: no model; ranks the segment's sentences against the question (BM25). Deterministic.
- `LLMReader`: the paper's reading agent, on any OpenAI-compatible chat endpoint.
An endpoint that keeps failing raises ReaderError (an environment fault the browse tool reports).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import openai

from researchrl.errors import EnvironmentFault
from researchrl.prompts import READER_PROMPT
from researchrl.web.cache import endpoint_id
from researchrl.web.chat import ChatError, complete, openai_client
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


@dataclass(frozen=True)
class ReadResult:
    """What the reader kept from a segment ("" for nothing new) and whether to read the next one."""

    info: str
    page_down: bool


class ReaderError(EnvironmentFault):
    """The reader could not read for an environment reason (`kind`: timeout, connect, auth, http_429, http_500, ...)."""

    def __init__(self, kind: str, message: str):
        super().__init__(kind, f"{kind}: {message}")


class Reader(Protocol):
    """Reads one segment; raises ReaderError only for environment faults."""

    async def read(self, req: ReadRequest) -> ReadResult:
        """Extract what is new in `req.segment` and decide whether to page down."""
        ...


# ---------------------------------------------------------------- extractive (no model)

_STOPWORDS = frozenset(
    "a an the and or but if of in on at to for from by with as is are was were be been being do does did "
    "what which who whom whose when where why how this that these those it its he she they them his her "
    "their there than then so not no yes can could would should will shall may might must about into "
    "over under also such i you we our your my me us".split()
)
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]]))\s+(?=\S)(?![a-z])")


def _terms(text: str) -> list[str]:
    """Lower-case word tokens with accents folded and stopwords dropped ("Lilû" -> "lilu")."""
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return [t for t in re.findall(r"\w+", folded) if t not in _STOPWORDS]


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`: line breaks end sentences, and so do . ! ? followed by space and no lower-case letter."""
    sentences = []
    for line in text.splitlines():
        sentences.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return sentences


def bm25_scores(query: list[str], docs: list[list[str]], k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Okapi BM25 of each tokenized doc for the query's distinct terms, IDF over `docs` (always > 0)."""
    if not docs:
        return []
    avg_len = sum(map(len, docs)) / len(docs) or 1.0
    df = Counter(term for doc in docs for term in set(doc))
    scores = []
    for doc in docs:
        tf = Counter(doc)
        score = 0.0
        for term in set(query):
            if tf[term]:
                idf = math.log(1 + (len(docs) - df[term] + 0.5) / (df[term] + 0.5))
                norm = tf[term] + k1 * (1 - b + b * len(doc) / avg_len)
                score += idf * tf[term] * (k1 + 1) / norm
        scores.append(score)
    return scores


def _squash(text: str) -> str:
    """Whitespace-normalized lower case, for "is this sentence already in memory" tests."""
    return " ".join(text.split()).lower()


@dataclass(frozen=True)
class ExtractiveReader:
    """A model-free reader: the segment's sentences sharing terms with the question or sub-query, best first.

    Score = BM25 of the sentence (sentences of the segment as the corpus) for the distinct non-stopword
    terms of question + sub-query. Kept: up to `max_sentences` with score > 0 that are not already in
    memory. It pages down only when this segment added something and more segments remain.
    """

    max_sentences: int = 5

    async def read(self, req: ReadRequest) -> ReadResult:
        """Pick the new, relevant sentences of the segment."""
        sentences = list(dict.fromkeys(split_sentences(req.segment)))
        scores = bm25_scores(_terms(f"{req.question} {req.sub_query}"), [_terms(s) for s in sentences])
        known = _squash(req.memory)
        ranked = sorted(
            (i for i, score in enumerate(scores) if score > 0 and _squash(sentences[i]) not in known),
            key=lambda i: (-scores[i], i),
        )
        info = " ".join(sentences[i] for i in ranked[: self.max_sentences])
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
    """The reader model's reply as a ReadResult; unparseable or empty replies mean nothing new, stop."""
    reply = _THINK.sub("", reply or "")
    info = reply_tag(reply, "extracted_info") or ""
    verdict = (reply_tag(reply, "page_down") or "").lower()
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
        """Ask the model about one segment; bounded retries, then ReaderError."""
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
