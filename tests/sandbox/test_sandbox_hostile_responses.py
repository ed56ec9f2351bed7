"""The newer fault kinds as a plain HTTP client sees them: garbage JSON, redirect loops, 50 MB pages, binary, bad gzip."""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from researchrl.sandbox.faults import GARBAGE_JSON, HUGE_PAGE_BYTES, LOOP_PARAM
from researchrl.sandbox.pages import NOT_GZIP_PAGE
from researchrl.sandbox.server import SandboxServer

Faulty = Callable[..., AbstractContextManager[SandboxServer]]
PAGE = "/wiki/Alû"
CHAT = {"model": "sandbox-reader", "messages": [{"role": "user", "content": "hello"}]}


def test_garbage_json_is_a_200_json_response_that_does_not_parse(faulty: Faulty) -> None:
    with faulty(rate_garbage_json=1.0) as server:
        search = httpx.post(f"{server.url}/search", json={"q": "Alû"})
        chat = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT)
        page = httpx.get(server.url + PAGE)  # garbage JSON does not apply to pages
        assert server.faults["garbage_json"] == 2 and server.faults["requests"] == 3
    for response in (search, chat):
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert response.content == GARBAGE_JSON
        with pytest.raises(json.JSONDecodeError):
            response.json()
    assert page.status_code == 200 and "Alû" in page.text


def test_redirect_loop_bounces_between_two_urls_forever(faulty: Faulty) -> None:
    with faulty(rate_redirect_loop=1.0) as server, httpx.Client(base_url=server.url) as client:
        first = client.get(PAGE + "?lang=en")
        second = client.get(first.headers["location"])
        third = client.get(second.headers["location"])
        fourth = client.get(third.headers["location"])
        assert server.faults["redirect_loop"] == 1 and server.faults["requests"] == 4  # one loop, four hops
        with pytest.raises(httpx.TooManyRedirects):
            client.get(PAGE, follow_redirects=True)
        assert server.faults["redirect_loop"] == 2 and server.faults["requests"] == 4 + 21  # httpx follows 20
    assert all(r.status_code == 302 for r in (first, second, third, fourth))
    b, c = first.headers["location"], second.headers["location"]
    assert b != c and third.headers["location"] == b and fourth.headers["location"] == c  # A -> B -> C -> B -> C
    assert urlsplit(b).path == "/wiki/Al%C3%BB" and parse_qs(urlsplit(b).query) == {"lang": ["en"], LOOP_PARAM: ["1"]}
    assert parse_qs(urlsplit(c).query) == {"lang": ["en"], LOOP_PARAM: ["2"]}


def test_loop_hops_take_no_draw_so_they_do_not_shift_the_sequence(faulty: Faulty) -> None:
    rates = dict(seed=3, rate_500=0.2, rate_redirect_loop=0.2, rate_binary=0.2)

    def outcomes(follow_loops: bool) -> list[str]:
        seen = []
        with faulty(**rates) as server, httpx.Client(base_url=server.url) as client:
            for _ in range(60):
                response = client.get(PAGE)
                seen.append(f"{response.status_code} {response.headers['content-type']}")
                if follow_loops and response.status_code == 302:
                    client.get(response.headers["location"])
        return seen

    plain = outcomes(follow_loops=False)
    assert outcomes(follow_loops=True) == plain
    assert {"302 text/html; charset=utf-8", "500 text/html; charset=utf-8", "200 image/png"} < set(plain)


@pytest.mark.parametrize("length", ["declared", "chunked"])
def test_huge_page_is_streamed_50_mb_without_holding_it(faulty: Faulty, length: str) -> None:
    with faulty(rate_huge_page=1.0, huge_page_length=length) as server, httpx.Client(timeout=30) as client:
        tracemalloc.start()
        try:
            with client.stream("GET", server.url + PAGE) as response:
                size, last = 0, b""
                for chunk in response.iter_raw():
                    size, last = size + len(chunk), chunk
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert response.status_code == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
    if length == "declared":
        assert response.headers["content-length"] == str(HUGE_PAGE_BYTES)
    else:
        assert "content-length" not in response.headers and response.headers["transfer-encoding"] == "chunked"
    assert size == HUGE_PAGE_BYTES and last.endswith(b"</body></html>\n")
    assert peak < 8_000_000, f"server and client together held {peak} bytes at once"


def test_binary_is_a_valid_png(faulty: Faulty) -> None:
    with faulty(rate_binary=1.0) as server:
        response = httpx.get(server.url + PAGE)
    body = response.content
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(body):
        (length,) = struct.unpack(">I", body[pos : pos + 4])
        kind, data = body[pos + 4 : pos + 8], body[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", body[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + data)
        kinds.append(kind)
        pos += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


def test_bad_encoding_declares_gzip_on_a_plain_body(faulty: Faulty) -> None:
    with faulty(rate_bad_encoding=1.0) as server:
        with pytest.raises(httpx.DecodingError):
            httpx.get(server.url + PAGE)
        with httpx.Client() as client, client.stream("GET", server.url + PAGE) as response:
            raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip" and raw == NOT_GZIP_PAGE


def test_reader_faults_are_shaped_like_openai_errors(faulty: Faulty) -> None:
    with faulty(rate_429=1.0, retry_after_s=2) as server:
        limited = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT)
        models = httpx.get(f"{server.url}/v1/models")  # metadata is never faulted
    with faulty(rate_500=1.0, targets=("reader",)) as server:
        failed = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT)
        search = httpx.post(f"{server.url}/search", json={"q": "Alû"})  # not a target here
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert limited.json()["error"]["type"] == "rate_limit_exceeded"
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "server_error"
    assert models.status_code == 200 and search.status_code == 200
