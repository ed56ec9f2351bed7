"""Page → readable text → reader-sized segments (the official "viewport pages")."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import trafilatura

from researchrl.types import Page
from researchrl.web.http import HTML_TYPES

SEGMENT_CHARS = 40960  # official viewport page size: 1024 * 5 * 8 characters
_WHITESPACE = frozenset(" \t\r\n")


_EXTRACTED: OrderedDict[str, str] = OrderedDict()  # sha256 of (url, html) -> main text, least recently used first
_EXTRACTED_MAX = 1024  # pages remembered; the G rollouts of a question browse the same pages
_EXTRACTED_LOCK = threading.Lock()  # extraction runs in worker threads


def extract_text(page: Page) -> str:
    """The page's main text, paragraphs on their own lines; plain-text pages pass through unchanged.

    HTML goes through trafilatura (boilerplate, navigation and comments dropped, tables kept); when it
    finds no main content, the whole visible text is used rather than nothing. Results are remembered
    (bounded LRU), since extraction is the costliest CPU step of a browse.
    """
    if page.content_type not in HTML_TYPES:
        return page.text
    key = hashlib.sha256(f"{page.url}\n{page.text}".encode("utf-8", "surrogatepass")).hexdigest()
    with _EXTRACTED_LOCK:
        if key in _EXTRACTED:
            _EXTRACTED.move_to_end(key)
            return _EXTRACTED[key]
    main = trafilatura.extract(page.text, url=page.url or None, include_comments=False, include_tables=True)
    if not main:
        main = trafilatura.html2txt(page.text) if page.text.strip() else ""
    with _EXTRACTED_LOCK:
        _EXTRACTED[key] = main
        while len(_EXTRACTED) > _EXTRACTED_MAX:
            _EXTRACTED.popitem(last=False)
    return main


def segment(text: str, size: int = SEGMENT_CHARS) -> list[str]:
    """Consecutive chunks of about `size` characters; concatenated they give back `text` exactly.

    As in the official code each chunk is extended until its last character is whitespace, so words
    are not cut; unlike it, the extension stops after `size // 8` more characters, so a page without
    whitespace (a base64 blob) cannot become one giant segment.
    """
    if size < 1:
        raise ValueError("segment size must be positive")
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        limit = min(end + size // 8, len(text))
        while end < limit and text[end - 1] not in _WHITESPACE:
            end += 1
        chunks.append(text[start:end])
        start = end
    return chunks
