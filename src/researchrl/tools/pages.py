"""Page → readable text → reader-sized segments (the official "viewport pages")."""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from collections import OrderedDict

import trafilatura

from researchrl.types import Page
from researchrl.web.http import HTML_TYPES

SEGMENT_CHARS = 40960  # official viewport page size: 1024 * 5 * 8 characters
_WHITESPACE = frozenset(" \t\r\n")
_REPEAT_CHARS = 30  # a kept comment line this long that the main text contains is a repeat of a post
# How forum threads and Q&A pages declare themselves (schema.org microdata itemtype or JSON-LD @type); comment markup
# alone is no sign, news and blog pages carry it for their reader comments.
_DISCUSSION = re.compile(
    r"""itemtype\s*=\s*["']?[^"'>]*schema\.org/(?:DiscussionForumPosting|QAPage)\b"""
    r'|"@type"\s*:\s*(?:\[[^\]]*)?"(?:DiscussionForumPosting|QAPage)"'
)


_EXTRACTED: OrderedDict[str, str] = OrderedDict()  # sha256 of (url, html) -> main text, least recently used first
_EXTRACTED_MAX = 1024  # pages remembered; the G rollouts of a question browse the same pages
_EXTRACTED_LOCK = threading.Lock()  # extraction runs in worker threads


def extract_text(page: Page) -> str:
    """The page's main text, paragraphs on their own lines; plain-text pages pass through unchanged.

    HTML goes through `extract_main`. Results are remembered (bounded LRU), since extraction is the
    costliest CPU step of a browse.
    """
    if page.content_type not in HTML_TYPES:
        return page.text
    key = cache_key(page)
    main = cached_text(key)
    if main is None:
        main = extract_main(page.text, page.url or None)
        remember_text(key, main)
    return main


def cache_key(page: Page) -> str:
    """What the extraction cache knows a page by: sha256 of its URL and HTML (trafilatura reads both)."""
    return hashlib.sha256(f"{page.url}\n{page.text}".encode("utf-8", "surrogatepass")).hexdigest()


def cached_text(key: str) -> str | None:
    """The remembered main text under `key`, now the most recently used; None when not remembered."""
    with _EXTRACTED_LOCK:
        if key not in _EXTRACTED:
            return None
        _EXTRACTED.move_to_end(key)
        return _EXTRACTED[key]


def remember_text(key: str, main: str) -> None:
    """Remember `main` under `key`, forgetting the least recently used past _EXTRACTED_MAX pages."""
    with _EXTRACTED_LOCK:
        _EXTRACTED[key] = main
        while len(_EXTRACTED) > _EXTRACTED_MAX:
            _EXTRACTED.popitem(last=False)


def extract_main(html: str, url: str | None = None, include_comments: bool | None = None) -> str:
    """Main text of an HTML document by trafilatura (boilerplate and navigation dropped, tables kept), uncached.

    Comments are kept on forum threads and Q&A pages (`is_discussion`), where the posts are the content, and
    dropped elsewhere, where they are reader comments: keeping them everywhere lowers word F1 on 311 real news
    and article pages from 0.945 to 0.937 (bench/extraction.py). `include_comments` overrides the choice.
    Without comments trafilatura runs with `favor_recall` (it skips the readability comparison once its own text
    is long): on those 311 pages 1.45x the pages per CPU second of its balanced default (92.7 vs 63.9) at equal
    or higher mean F1 on every page type (bench/extraction.py; `fast` and resiliparse, faster still, lose over a
    point on some type). Discussion pages keep the balanced setting, which no benchmark page exercises.
    When trafilatura finds no main content, the whole visible text is used rather than nothing.
    """
    if include_comments is None:
        include_comments = is_discussion(html)
    main = trafilatura_main(html, url, include_comments, favor_recall=not include_comments)
    if not main:
        main = trafilatura.html2txt(html) if html.strip() else ""
    return main


def trafilatura_main(html: str, url: str | None = None, include_comments: bool = False, **settings: object) -> str:
    """trafilatura's main text with tables, "" when it finds none; `settings` go to trafilatura as they are
    (fast, favor_precision, favor_recall, ...: bench/extraction.py compares them)."""
    if include_comments:
        return _with_comments(html, url, **settings)
    return trafilatura.extract(html, url=url, include_comments=False, include_tables=True, **settings) or ""


def _with_comments(html: str, url: str | None, **settings: object) -> str:
    """trafilatura.extract's text with comments, less the comment lines that the main text already holds.

    trafilatura can put a post both in the main text (there with its author's name on the line) and among the
    comments, and extract() would give it twice. Short lines ("Thanks!") are dropped only when repeated exactly.
    """
    document = trafilatura.bare_extraction(html, url=url, include_comments=True, include_tables=True, **settings)
    if document is None:
        return ""
    body = document.text or ""
    lines = set(body.split("\n"))
    comments = [
        line for line in (document.comments or "").split("\n")
        if line not in lines and not (len(line) >= _REPEAT_CHARS and line in body)
    ]
    return unicodedata.normalize("NFC", "\n".join([body, *comments]).strip())


def is_discussion(html: str) -> bool:
    """Whether the page says it is a forum thread or a Q&A page (schema.org DiscussionForumPosting or QAPage).

    Forums without that markup are not recognised, and lose posts that sit in comment containers.
    """
    if "DiscussionForumPosting" not in html and "QAPage" not in html:  # the common case, 10x faster than the regex
        return False
    return _DISCUSSION.search(html) is not None


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
