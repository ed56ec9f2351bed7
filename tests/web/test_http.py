"""The fetcher against a loopback server: decoding, retries, timeouts, size caps, content types, walls, redirects."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from researchrl.web.errors import FetchError
from researchrl.web.http import FetchConfig, Fetcher, HostLimiter, decode_body, looks_like_captcha
from researchrl.web.retry import RetryPolicy

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, jitter=0.0)


class Sleeps:
    """Stands in for asyncio.sleep: records the requested delays, waits for none of them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def fetcher(page_server, sleeps: Sleeps):
    """A fetcher that may reach only the loopback server, with fast retries and recorded backoff."""
    fetcher = Fetcher(FetchConfig(allow_hosts=page_server.allow, retry=FAST_RETRY), sleep=sleeps)
    yield fetcher
    await fetcher.aclose()


async def fetch_error(fetcher: Fetcher, url: str) -> FetchError:
    with pytest.raises(FetchError) as err:
        await fetcher.fetch(url)
    return err.value


async def test_html_page(fetcher: Fetcher, page_server) -> None:
    page = await fetcher.fetch(page_server.url("/article"))
    assert (page.status, page.content_type, page.url) == (200, "text/html", page_server.url("/article"))
    assert "masculine Akkadian word for a spirit" in page.text


@pytest.mark.parametrize("query", ["", "?meta=1"])
async def test_latin1_page_decoded_from_header_or_meta_charset(fetcher: Fetcher, page_server, query: str) -> None:
    page = await fetcher.fetch(page_server.url("/latin1" + query))
    assert "Café crème à la façade naïve" in page.text


def test_decode_body_falls_back_to_utf8_with_replacement() -> None:
    assert decode_body("é".encode(), None, is_html=False) == "é"
    assert decode_body(b"caf\xe9", "no-such-charset", is_html=False) == "caf\ufffd"


async def test_404_is_not_retried(fetcher: Fetcher, page_server, sleeps: Sleeps) -> None:
    err = await fetch_error(fetcher, page_server.url("/status/404"))
    assert err.kind == "http_404"
    assert page_server.log.paths == ["/status/404"]
    assert sleeps.delays == []


async def test_500_then_200_is_retried(fetcher: Fetcher, page_server, sleeps: Sleeps) -> None:
    page = await fetcher.fetch(page_server.url("/fail-once/500/a"))
    assert "Akkadian" in page.text
    assert page_server.log.paths == ["/fail-once/500/a"] * 2
    assert len(sleeps.delays) == 1


async def test_429_honours_retry_after(fetcher: Fetcher, page_server, sleeps: Sleeps) -> None:
    page = await fetcher.fetch(page_server.url("/fail-once/429/b?after=3"))
    assert page.status == 200
    assert len(page_server.log.paths) == 2
    assert sleeps.delays == [3.0]


async def test_persistent_503_gives_up_after_the_policy_attempts(fetcher: Fetcher, page_server) -> None:
    err = await fetch_error(fetcher, page_server.url("/status/503"))
    assert err.kind == "http_503"
    assert len(page_server.log.paths) == FAST_RETRY.attempts


async def test_read_timeout_is_retried_then_reported(page_server, sleeps: Sleeps) -> None:
    retry = RetryPolicy(attempts=2, base_delay=0.01)
    config = FetchConfig(allow_hosts=page_server.allow, read_timeout=0.2, retry=retry)
    fetcher = Fetcher(config, sleep=sleeps)
    started = time.monotonic()
    err = await fetch_error(fetcher, page_server.url("/slow?s=1"))
    assert err.kind == "timeout"
    assert len(page_server.log.paths) == 2
    assert time.monotonic() - started < 1.5
    await fetcher.aclose()


async def test_whole_fetch_deadline(page_server) -> None:
    config = FetchConfig(allow_hosts=page_server.allow, deadline=0.3, retry=RetryPolicy(attempts=5, base_delay=0.01))
    fetcher = Fetcher(config)
    started = time.monotonic()
    err = await fetch_error(fetcher, page_server.url("/slow?s=2"))
    assert err.kind == "timeout"
    assert time.monotonic() - started < 1.0
    await fetcher.aclose()


async def test_the_deadline_counts_from_the_first_request_not_from_the_wait_for_a_slot(page_server) -> None:
    fetcher = Fetcher(FetchConfig(allow_hosts=page_server.allow, per_host_concurrency=1, deadline=1.0))
    # one at a time, 0.2 s each: the sixth waits a second for its slot, then fetches well within its deadline
    started = time.monotonic()
    pages = await asyncio.gather(*(fetcher.fetch(page_server.url(f"/slow?s=0.2&i={i}")) for i in range(6)))
    assert len(pages) == 6 and time.monotonic() - started > 1.2
    await fetcher.aclose()


async def test_connection_refused_is_retried_then_reported(page_server, sleeps: Sleeps) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fetcher = Fetcher(FetchConfig(allow_hosts=frozenset({"127.0.0.1"}), retry=FAST_RETRY), sleep=sleeps)
    err = await fetch_error(fetcher, f"http://127.0.0.1:{port}/")
    assert err.kind == "connect"
    assert len(sleeps.delays) == FAST_RETRY.attempts - 1
    await fetcher.aclose()


async def test_incomplete_body_is_retried(fetcher: Fetcher, page_server, sleeps: Sleeps) -> None:
    page = await fetcher.fetch(page_server.url("/truncated-once"))
    assert "Akkadian" in page.text
    assert page_server.log.paths == ["/truncated-once"] * 2
    assert len(sleeps.delays) == 1


@pytest.mark.parametrize("declared", [False, True])
async def test_body_over_max_bytes_is_refused_without_reading_it_all(page_server, declared: bool) -> None:
    config = FetchConfig(allow_hosts=page_server.allow, max_bytes=100_000)
    fetcher = Fetcher(config)
    err = await fetch_error(fetcher, page_server.url("/big?mb=16" + ("&declared=1" if declared else "")))
    streamed = page_server.log.streamed
    assert err.kind == "too_large"
    assert len(page_server.log.paths) == 1  # never retried
    assert streamed < 4 * 2**20  # of 16 MiB: the fetcher stopped as soon as it knew
    await fetcher.aclose()


@pytest.mark.parametrize("media_type", ["application/pdf", "image/png", "application/octet-stream"])
async def test_unsupported_content_type(fetcher: Fetcher, page_server, media_type: str) -> None:
    err = await fetch_error(fetcher, page_server.url(f"/typed?type={media_type}"))
    assert err.kind == "unsupported_content_type"
    assert str(err) == f"unsupported_content_type: {media_type}"
    assert len(page_server.log.paths) == 1


async def test_any_text_type_is_accepted(fetcher: Fetcher, page_server) -> None:
    page = await fetcher.fetch(page_server.url("/typed?type=text/csv"))
    assert page.content_type == "text/csv"


async def test_captcha_wall_is_an_error_but_an_article_about_captchas_is_not(fetcher: Fetcher, page_server) -> None:
    err = await fetch_error(fetcher, page_server.url("/captcha"))
    assert err.kind == "captcha"
    page = await fetcher.fetch(page_server.url("/about-captcha"))
    assert "Luis von Ahn" in page.text


@pytest.mark.parametrize(
    ("page_html", "wall"),
    [
        ("<title>Just a moment...</title><p>" + "x " * 5000 + "</p>", True),
        ("<title>Attention Required! | Cloudflare</title>", True),
        ("<title>Are you a robot?</title>", True),
        ("<p>Please solve the CAPTCHA to continue.</p>", True),
        ("<title>Blog</title><p>" + "A long post. " * 300 + "</p><script>grecaptcha.render()</script>", False),
        ("<title>Weather</title><p>Sunny.</p>", False),
    ],
)
def test_captcha_heuristic(page_html: str, wall: bool) -> None:
    assert looks_like_captcha(page_html) is wall


async def test_relative_redirect_is_followed(fetcher: Fetcher, page_server) -> None:
    page = await fetcher.fetch(page_server.url("/redirect?to=/article"))
    assert page.url == page_server.url("/article")
    assert page_server.log.paths == ["/redirect?to=/article", "/article"]


async def test_redirect_loop_is_bounded(page_server) -> None:
    fetcher = Fetcher(FetchConfig(allow_hosts=page_server.allow, max_redirects=3))
    err = await fetch_error(fetcher, page_server.url("/loop"))
    assert err.kind == "too_many_redirects"
    assert page_server.log.paths == ["/loop"] * 4
    await fetcher.aclose()


async def test_redirect_without_location(fetcher: Fetcher, page_server) -> None:
    assert (await fetch_error(fetcher, page_server.url("/no-location"))).kind == "bad_redirect"


async def test_per_host_concurrency_limit(page_server) -> None:
    fetcher = Fetcher(FetchConfig(allow_hosts=page_server.allow, per_host_concurrency=2))
    pages = await asyncio.gather(*(fetcher.fetch(page_server.url(f"/hold?i={i}")) for i in range(6)))
    assert len(pages) == 6
    assert page_server.log.max_active == 2
    await fetcher.aclose()


async def test_host_limiter_forgets_idle_hosts_least_recent_first() -> None:
    limiter = HostLimiter(per_host=1, max_hosts=2)
    async with limiter.hold("a.test"):
        async with limiter.hold("b.test"):
            pass
        async with limiter.hold("c.test"):  # b is idle and older than c: b goes, busy a stays
            pass
        assert set(limiter._slots) == {"a.test", "c.test"}
    async with limiter.hold("d.test"):
        pass
    assert set(limiter._slots) == {"c.test", "d.test"}
