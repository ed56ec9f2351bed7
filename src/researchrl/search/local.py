"""Search a local corpus with BM25 (bm25s), in-process: the web_search and browse backend that needs no network."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np

from researchrl.data.rows import InputError, jsonl_rows, parquet_rows, read_parquet
from researchrl.types import Page, SearchResult
from researchrl.web.errors import FetchError

SNIPPET_CHARS = 300
CORPUS_SCHEME = "corpus://"
STOPWORDS = "en"  # bm25s's English list; no stemmer, since PyStemmer is an optional extra


@dataclass(frozen=True)
class Document:
    """One retrievable passage; passages that share a title stay separate documents."""

    id: str
    title: str
    text: str
    url: str | None = None


def _document(record: object, where: str) -> Document:
    """Check one raw record and build its Document; `where` names the file and line/row for the error."""
    if not isinstance(record, Mapping):
        raise InputError(f"{where}: expected an object with id, title, text; got {type(record).__name__}")
    missing = [key for key in ("id", "title", "text") if record.get(key) is None]
    if missing:
        raise InputError(f"{where}: missing field(s) {', '.join(missing)}")
    doc_id, title, text, url = record["id"], record["title"], record["text"], record.get("url")
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool) or str(doc_id) == "":
        raise InputError(f"{where}: id must be a non-empty string or an integer, got {doc_id!r}")
    for key, value in (("title", title), ("text", text)):
        if not isinstance(value, str):
            raise InputError(f"{where}: {key} must be a string, got {type(value).__name__}")
    if url is not None and not isinstance(url, str):
        raise InputError(f"{where}: url must be a string, got {type(url).__name__}")
    return Document(str(doc_id), title, text, url or None)


class Corpus:
    """An ordered collection of documents with unique ids, loaded from JSONL or parquet."""

    def __init__(self, documents: list[Document]):
        if not documents:
            raise ValueError("a corpus needs at least one document")
        self.documents = documents
        self._by_id: dict[str, Document] = {}
        for doc in documents:
            if doc.id in self._by_id:
                raise ValueError(f"duplicate document id {doc.id!r}")
            self._by_id[doc.id] = doc

    @classmethod
    def load(cls, path: str | Path) -> Corpus:
        """Load by suffix: .jsonl/.json lines, or .parquet."""
        path = Path(path)
        if path.suffix == ".parquet":
            return cls.from_parquet(path)
        if path.suffix in (".jsonl", ".json", ".ndjson"):
            return cls.from_jsonl(path)
        raise InputError(f"{path}: unknown corpus format (expected .jsonl or .parquet)")

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Corpus:
        """One JSON object per line with id, title, text and an optional url; blank lines are skipped."""
        path = Path(path)
        return cls._checked([_document(record, where) for where, record in jsonl_rows(path, "{path}:{line}")], path)

    @classmethod
    def from_parquet(cls, path: str | Path) -> Corpus:
        """A parquet table with columns id, title, text and an optional url."""
        path = Path(path)
        table = read_parquet(path)
        missing = [col for col in ("id", "title", "text") if col not in table.column_names]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
        table = table.select([c for c in ("id", "title", "text", "url") if c in table.column_names])
        return cls._checked([_document(row, where) for where, row in parquet_rows(path, table)], path)

    @classmethod
    def _checked(cls, documents: list[Document], path: Path) -> Corpus:
        """Build the corpus, naming the file in any error."""
        try:
            return cls(documents)
        except ValueError as exc:
            raise InputError(f"{path}: {exc}") from exc

    def __len__(self) -> int:
        return len(self.documents)

    def __iter__(self) -> Iterator[Document]:
        return iter(self.documents)

    def get(self, doc_id: str) -> Document | None:
        """The document with this id, if any."""
        return self._by_id.get(doc_id)


class BM25Index:
    """A BM25 index over each document's title and text."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self._bm25 = bm25s.BM25()
        texts = [f"{doc.title}\n{doc.text}" for doc in corpus]
        self._bm25.index(bm25s.tokenize(texts, stopwords=STOPWORDS, show_progress=False), show_progress=False)

    @classmethod
    def from_path(cls, path: str | Path) -> BM25Index:
        """Load a corpus file and index it."""
        return cls(Corpus.load(path))

    def search(self, query: str, k: int = 10) -> list[tuple[Document, float]]:
        """The top `k` documents with a positive score, best first (ties in corpus order)."""
        words = bm25s.tokenize([query], stopwords=STOPWORDS, return_ids=False, show_progress=False)[0]
        known = [w for w in words if w in self._bm25.vocab_dict]
        if not known or k <= 0:
            return []
        scores = self._bm25.get_scores(known)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]
        return [(self.corpus.documents[i], float(scores[i])) for i in top if scores[i] > 0]


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The start of `text`, cut at a word boundary near `limit` characters, with '...' when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    return text[: cut if cut > 0 else limit].rstrip(" ,;:") + " ..."


def document_url(doc: Document) -> str:
    """The document's own url, or corpus://<id> when it has none."""
    return doc.url or f"{CORPUS_SCHEME}{doc.id}"


class LocalSearch:
    """SearchBackend over a BM25Index that also serves its documents as pages, so browsing needs no HTTP."""

    name = "local"

    def __init__(self, index: BM25Index):
        self.index = index
        self._by_url = {document_url(doc): doc for doc in index.corpus}

    @classmethod
    def from_path(cls, path: str | Path) -> LocalSearch:
        """Index a corpus file (JSONL or parquet) and search it."""
        return cls(BM25Index.from_path(path))

    async def search(self, query: str, num: int = 10) -> list[SearchResult]:
        """Top `num` documents for `query`; a blank query finds nothing. Scoring runs off the event loop."""
        if not query.strip():
            return []
        hits = await asyncio.to_thread(self.index.search, query, num)
        return [SearchResult(doc.title, document_url(doc), snippet(doc.text)) for doc, _ in hits]

    async def fetch(self, url: str) -> Page:
        """The document behind a corpus://<id> url or its own url, as plain text 'title\\n\\ntext'."""
        doc = self._by_url.get(url)
        if doc is None and url.startswith(CORPUS_SCHEME):
            doc = self.index.corpus.get(url.removeprefix(CORPUS_SCHEME))
        if doc is None:
            raise FetchError(url, "http_404", "no such document in the local corpus")
        return Page(url, 200, "text/plain", f"{doc.title}\n\n{doc.text}")

    async def aclose(self) -> None:
        """Nothing to release: the index lives in memory."""
