"""The extractive reader's sentence ranking (BM25), in a module of its own: page-extraction workers rank a page's
segments in the task that extracts it (tools/extract_pool.py), and they import this without the LLM client."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

_STOPWORDS = frozenset(
    "a an the and or but if of in on at to for from by with as is are was were be been being do does did "
    "what which who whom whose when where why how this that these those it its he she they them his her "
    "their there than then so not no yes can could would should will shall may might must about into "
    "over under also such i you we our your my me us".split()
)
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]]))\s+(?=\S)(?![a-z])")
_WORD = re.compile(r"\w+")


def terms(text: str) -> list[str]:
    """Lower-case word tokens with accents folded and stopwords dropped ("Lilû" -> "lilu")."""
    folded = text.lower()
    if not folded.isascii():  # ASCII has nothing to decompose or fold
        folded = unicodedata.normalize("NFKD", folded)
        folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return [t for t in _WORD.findall(folded) if t not in _STOPWORDS]


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


def rank_sentences(segment: str, question: str, sub_query: str) -> tuple[str, ...]:
    """The segment's distinct sentences with a BM25 score > 0 for the terms of question + sub-query (the segment's
    sentences are the corpus), best first, ties in page order."""
    sentences = list(dict.fromkeys(split_sentences(segment)))
    scores = bm25_scores(terms(f"{question} {sub_query}"), [terms(s) for s in sentences])
    ranked = sorted((i for i, score in enumerate(scores) if score > 0), key=lambda i: (-scores[i], i))
    return tuple(sentences[i] for i in ranked)


def new_sentences(ranked: Iterable[str], memory: str, limit: int) -> list[str]:
    """The first `limit` sentences of `ranked` not already in `memory` (whitespace and case aside)."""
    known = _squash(memory)
    kept: list[str] = []
    for sentence in ranked:
        if len(kept) == limit:
            break
        if _squash(sentence) not in known:
            kept.append(sentence)
    return kept


def _squash(text: str) -> str:
    """Whitespace-normalized lower case, for "is this sentence already in memory" tests."""
    return " ".join(text.split()).lower()
