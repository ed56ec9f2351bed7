"""What the sandbox serves: article pages in the boilerplate real sites have, error pages, a captcha wall, hostile bodies."""

from __future__ import annotations

import functools
import random
import struct
import zlib
from collections.abc import Iterator
from html import escape
from urllib.parse import quote

SITE = "Sandbox Wiki"
COOKIE_TEXT = (
    "We use cookies and similar technologies to remember your preferences, measure traffic and "
    "personalise content. By clicking Accept all you agree to our use of cookies as described in our Cookie Policy."
)
NAV_LINKS = [
    ("Main page", "/wiki/Main_Page"), ("Contents", "/wiki/Special:Contents"),
    ("Current events", "/wiki/Special:CurrentEvents"), ("Random article", "/wiki/Special:Random"),
    ("About", "/wiki/Special:About"), ("Contact us", "/wiki/Special:Contact"), ("Donate", "/wiki/Special:Donate"),
    ("Help", "/wiki/Help:Contents"), ("Learn to edit", "/wiki/Help:Introduction"),
    ("Community portal", "/wiki/Special:Community"), ("Recent changes", "/wiki/Special:RecentChanges"),
    ("Upload file", "/wiki/Special:Upload"), ("Log in", "/wiki/Special:UserLogin"),
    ("Create account", "/wiki/Special:CreateAccount"),
]
FOOTER_LINKS = [
    "Privacy policy", "About Sandbox Wiki", "Disclaimers", "Code of Conduct", "Developers", "Statistics",
    "Cookie statement", "Mobile view", "Terms of Use",
]
STYLE = (
    "body{font-family:sans-serif;margin:0}header nav a{margin-right:.8em}#content{display:flex}"
    "aside{width:14em;font-size:.85em}main{flex:1;padding:1em}footer{font-size:.8em;border-top:1px solid #ccc}"
    "#cookie-consent{position:fixed;bottom:0;left:0;right:0;background:#222;color:#fff;padding:1em}"
)


def page_path(title: str) -> str:
    """The sandbox path of an article: /wiki/ plus the title with spaces as underscores, percent-quoted."""
    return "/wiki/" + quote(title.replace(" ", "_"), safe="()',!:*")


def _nav() -> str:
    """The top navigation bar: site name, search box and many links."""
    links = "\n".join(f'<li><a href="{href}">{escape(text)}</a></li>' for text, href in NAV_LINKS)
    return (
        f'<header id="site-header"><a class="logo" href="/wiki/Main_Page">{SITE}</a>'
        '<form class="search" action="/wiki/Special:Search" role="search">'
        '<input type="search" name="search" placeholder="Search Sandbox Wiki"><button>Search</button></form>'
        f'<nav class="main-menu" aria-label="Main menu"><ul>\n{links}\n</ul></nav></header>'
    )


def _cookie_banner() -> str:
    """A consent dialog of the kind extraction must drop."""
    return (
        '<div id="cookie-consent" class="cookie-banner" role="dialog" aria-label="Cookie consent">'
        f"<p>{COOKIE_TEXT}</p>"
        '<button class="accept">Accept all</button> <button class="reject">Reject non-essential</button> '
        '<a href="/wiki/Special:CookieStatement">Manage preferences</a></div>'
    )


def _sidebar(sections: list[str], related: list[str]) -> str:
    """Table of contents and links to other articles."""
    toc = "".join(f'<li><a href="#s{i}">{escape(name)}</a></li>' for i, name in enumerate(sections, 1))
    links = "".join(f'<li><a href="{page_path(t)}">{escape(t)}</a></li>' for t in related)
    return (
        '<aside id="sidebar"><nav class="toc" aria-label="Contents"><h2>Contents</h2>'
        f'<ul><li><a href="#top">(Top)</a></li>{toc}<li><a href="#references">References</a></li></ul></nav>'
        f'<nav class="related" aria-label="Related articles"><h2>Related articles</h2><ul>{links}</ul></nav>'
        '<div class="tools"><h2>Tools</h2><ul><li><a href="#">What links here</a></li>'
        '<li><a href="#">Related changes</a></li><li><a href="#">Permanent link</a></li>'
        '<li><a href="#">Page information</a></li><li><a href="#">Cite this page</a></li>'
        '<li><a href="#">Download as PDF</a></li><li><a href="#">Printable version</a></li></ul></div></aside>'
    )


def _footer(title: str) -> str:
    """License line and the usual footer links."""
    links = " | ".join(f'<a href="/wiki/Special:{quote(text.replace(" ", "_"))}">{text}</a>' for text in FOOTER_LINKS)
    return (
        '<footer id="footer"><p>This page was last edited on 3 March 2024, at 12:00 (UTC).</p>'
        '<p>Text is available under the <a href="https://creativecommons.org/licenses/by-sa/4.0/">'
        "Creative Commons Attribution-ShareAlike License 4.0</a>; additional terms may apply. "
        f"The article {escape(title)} uses material from Wikipedia.</p>"
        f'<p class="footer-links">{links}</p><p>&copy; {SITE} contributors</p></footer>'
    )


def _document(title: str, body: str) -> str:
    """A full HTML document around `body`."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} - {SITE}</title><style>{STYLE}</style></head>\n<body>{body}</body></html>\n"
    )


def article_page(title: str, paragraphs: list[str], other_titles: list[str]) -> str:
    """An article with every passage as a paragraph, inside navigation, sidebar, cookie banner and footer."""
    related = random.Random(title).sample(other_titles, min(12, len(other_titles)))
    sections = ["Overview"] if len(paragraphs) == 1 else [f"Part {i}" for i in range(1, len(paragraphs) + 1)]
    body = "".join(f'<section id="s{i}"><p>{escape(text)}</p></section>' for i, text in enumerate(paragraphs, 1))
    main = (
        f'<main id="content-main"><article id="top"><h1 class="firstHeading">{escape(title)}</h1>'
        f'<div class="subtitle">From {SITE}, the free encyclopedia</div>'
        f'<div class="article-body">{body}</div></article>'
        '<div id="references"><h2>References</h2><ol><li>Wikipedia contributors. Retrieved 2024.</li></ol></div>'
        "</main>"
    )
    layout = f'<div id="content">{_sidebar(sections, related)}{main}</div>'
    return _document(title, _nav() + _cookie_banner() + layout + _footer(title))


def message_page(status: int, heading: str, message: str) -> str:
    """A plain error page (404, 429, 500) in the site's frame, without the article sidebar."""
    main = f'<main id="content-main"><h1>{status} {escape(heading)}</h1><p>{escape(message)}</p></main>'
    return _document(heading, _nav() + main + _footer(heading))


def captcha_page() -> str:
    """The anti-bot wall a crawler meets: 200 OK, no content, a challenge form."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Just a moment...</title>'
        '<meta name="robots" content="noindex,nofollow"></head><body><div class="challenge">'
        "<h1>Are you a robot?</h1><p>Our systems have detected unusual traffic from your computer network. "
        "Please confirm that you are not a robot to continue.</p>"
        '<form id="challenge-form" action="/_challenge" method="POST"><div class="captcha-box">'
        '<input type="checkbox" id="not-a-robot" name="not-a-robot"> <label for="not-a-robot">I\'m not a robot</label>'
        '</div><input type="hidden" name="challenge" value="6a1f0c"><button type="submit">Verify</button></form>'
        "<p class=\"small\">Why did this happen? This page checks that requests come from a person, not an "
        "automated script. Enable JavaScript and cookies to continue.</p></div></body></html>\n"
    )


NOT_GZIP_PAGE = (  # served with Content-Encoding: gzip, which it is not
    b"<!DOCTYPE html>\n<html><head><title>Misconfigured</title></head><body><p>This body is plain HTML although "
    b"the server declared it gzip-compressed.</p></body></html>\n"
)
_HUGE_HEAD = b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>A very long page</title></head><body>\n'
_HUGE_TAIL = b"</body></html>\n"
_HUGE_PARAGRAPH = b"<p>" + b"This endless page repeats the same sentence to test size limits. " * 15 + b"</p>\n"
_HUGE_CHUNK = _HUGE_PARAGRAPH * (65536 // len(_HUGE_PARAGRAPH))  # about 64 KiB per chunk, built once


def huge_page_chunks(total: int) -> Iterator[bytes]:
    """Exactly `total` bytes of valid HTML, yielded in ~64 KiB chunks that are slices of one shared buffer."""
    if total < len(_HUGE_HEAD) + len(_HUGE_TAIL):
        raise ValueError(f"a huge page needs at least {len(_HUGE_HEAD) + len(_HUGE_TAIL)} bytes")
    yield _HUGE_HEAD
    remaining = total - len(_HUGE_HEAD) - len(_HUGE_TAIL)
    while remaining > 0:
        chunk = _HUGE_CHUNK if remaining >= len(_HUGE_CHUNK) else _HUGE_CHUNK[:remaining]
        remaining -= len(chunk)
        yield chunk
    yield _HUGE_TAIL


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def tiny_png() -> bytes:
    """A valid 16x16 grey PNG: the kind of binary a browsing agent meets where it expected a page."""
    size = 16
    pixels = b"".join(b"\x00" + bytes(range(0, 256, 16)) for _ in range(size))  # filter byte + one row
    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(pixels))
            + _png_chunk(b"IEND", b""))
