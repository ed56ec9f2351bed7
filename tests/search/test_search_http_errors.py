"""The error contract every hosted search client shares: retries, error kinds, timeouts, and keys kept secret."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import pytest

from researchrl.search.base import SearchError
from researchrl.search.brave import BraveSearch
from researchrl.search.http_api import HttpSearchApi
from researchrl.search.searxng import SearxngSearch
from researchrl.search.serper import SerperSearch
from researchrl.search.tavily import TavilySearch
from researchrl.web.retry import RetryPolicy
from tests.search.search_api_fakes import FakeApi, Reply, json_reply

KEY = "sk-live-SECRET-KEY-do-not-leak"
FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.005, jitter=0.0, max_retry_after=0.2)
Factory = Callable[[str, RetryPolicy, float], HttpSearchApi]

PROVIDERS = [
    pytest.param(
        lambda url, retry, timeout: SerperSearch(KEY, url, timeout, retry),
        {"organic": [{"title": "T", "link": "https://a.example/", "snippet": "S"}]},
        id="serper",
    ),
    pytest.param(
        lambda url, retry, timeout: BraveSearch(KEY, url, timeout, retry),
        {"web": {"results": [{"title": "T", "url": "https://a.example/", "description": "S"}]}},
        id="brave",
    ),
    pytest.param(
        lambda url, retry, timeout: SearxngSearch(url.replace("http://", f"http://searx:{KEY}@"), timeout, retry),
        {"results": [{"title": "T", "url": "https://a.example/", "content": "S"}]},
        id="searxng",
    ),
    pytest.param(
        lambda url, retry, timeout: TavilySearch(KEY, url, timeout, retry),
        {"results": [{"title": "T", "url": "https://a.example/", "content": "S"}]},
        id="tavily",
    ),
]


async def failure(make: Factory, base_url: str, retry: RetryPolicy = FAST, timeout: float = 2.0) -> SearchError:
    """Run one search that must fail; the raised SearchError, checked never to carry the key."""
    client = make(base_url, retry, timeout)
    try:
        with pytest.raises(SearchError) as caught:
            await client.search("q")
    finally:
        await client.aclose()
    assert caught.value.provider == client.name
    assert KEY not in str(caught.value) and KEY not in repr(client)
    return caught.value


@pytest.mark.parametrize(("make", "ok"), PROVIDERS)
async def test_429_with_retry_after_is_waited_out_then_succeeds(api: FakeApi, make: Factory, ok: dict):
    api.reply(json_reply({"error": "rate limited"}, status=429, headers={"Retry-After": "1"}), json_reply(ok))
    client = make(api.base_url, FAST, 2.0)
    start = time.monotonic()
    results = await client.search("q")
    waited = time.monotonic() - start
    await client.aclose()
    assert [r.url for r in results] == ["https://a.example/"]
    assert len(api.received) == 2
    assert waited >= FAST.max_retry_after  # Retry-After 1 s, capped by the policy at 0.2 s


@pytest.mark.parametrize(("make", "ok"), PROVIDERS)
async def test_persistent_500_gives_up_after_exactly_attempts(api: FakeApi, make: Factory, ok: dict):
    api.reply(Reply(500, b"upstream exploded"))
    err = await failure(make, api.base_url)
    assert err.kind == "http_500"
    assert len(api.received) == FAST.attempts


@pytest.mark.parametrize(("make", "ok"), PROVIDERS)
async def test_401_is_auth_and_not_retried(api: FakeApi, make: Factory, ok: dict):
    api.reply(json_reply({"message": f"Unauthorized: invalid key {KEY}"}, status=401))
    err = await failure(make, api.base_url)
    assert err.kind == "auth"
    assert len(api.received) == 1


@pytest.mark.parametrize("status", [401, 404, 500])
async def test_a_key_straddling_the_excerpt_cut_is_not_kept_in_part(api: FakeApi, status: int):
    key = "live0123456789ABCDEFGHIJKLMN"  # not key-shaped: only the key actually sent can redact it
    body = "x" * 188 + f"{key} is not a valid key"  # 12 of its characters fall before the 200-character cut
    api.reply(Reply(status, body.encode(), {"content-type": "text/plain"}))
    client = SerperSearch(key, api.base_url, 2.0, FAST)
    with pytest.raises(SearchError) as caught:
        await client.search("q")
    await client.aclose()
    text = f"{caught.value} {caught.value!r}"
    assert "[redacted]" in text and not [key[i : i + 8] for i in range(len(key) - 7) if key[i : i + 8] in text], text


@pytest.mark.parametrize(("make", "ok"), PROVIDERS)
async def test_other_4xx_is_final(api: FakeApi, make: Factory, ok: dict):
    api.reply(json_reply({"message": "bad request"}, status=400))
    err = await failure(make, api.base_url)
    assert err.kind == "http_400"
    assert len(api.received) == 1


NOT_JSON = [
    Reply(200, b"<html><title>Just a moment...</title>Verify you are human</html>", {"content-type": "text/html"}),
    Reply(200, b""),
    Reply(200, b'{"organic": [{"title": "cut sh'),
]
NOT_JSON_IDS = ["captcha", "empty", "garbage"]


@pytest.mark.parametrize(("make", "ok"), PROVIDERS)
@pytest.mark.parametrize(
    "reply",
    [
        json_reply(["not", "an", "object"]),
        json_reply({"organic": "x", "web": {"results": "x"}, "results": "x"}),
        json_reply({"organic": [{"link": 7}], "web": {"results": [{"url": 7}]}, "results": [{"url": 7}]}),
    ],
    ids=["list", "results-not-list", "url-not-string"],
)
async def test_json_of_the_wrong_shape_is_bad_response_and_not_retried(api: FakeApi, make: Factory, ok: dict,
                                                                       reply: Reply):
    api.reply(reply)
    err = await failure(make, api.base_url)
    assert err.kind == "bad_response"
    assert len(api.received) == 1


@pytest.mark.parametrize(("make", "ok"), PROVIDERS)
@pytest.mark.parametrize("reply", NOT_JSON, ids=NOT_JSON_IDS)
async def test_a_200_that_is_not_json_is_retried_within_the_budget(api: FakeApi, make: Factory, ok: dict, reply: Reply):
    api.reply(reply)
    err = await failure(make, api.base_url)
    assert err.kind == "bad_response" and f"gave up after {FAST.attempts} attempts" in str(err)
    assert len(api.received) == FAST.attempts
    api.reset()
    api.reply(reply, reply, json_reply(ok))  # a wall twice, then the results: the last try answers
    client = make(api.base_url, FAST, 2.0)
    try:
        assert [r.url for r in await client.search("q")] == ["https://a.example/"]
    finally:
        await client.aclose()
    assert len(api.received) == FAST.attempts


@pytest.mark.parametrize(("make", "ok"), PROVIDERS)
async def test_a_server_slower_than_the_timeout_is_a_timeout(api: FakeApi, make: Factory, ok: dict):
    api.reply(json_reply(ok, delay=1.0))
    retry = RetryPolicy(attempts=2, base_delay=0.001, jitter=0.0)
    start = time.monotonic()
    err = await failure(make, api.base_url, retry, timeout=0.2)
    assert time.monotonic() - start < 0.9
    assert err.kind == "timeout"
    assert len(api.received) == 2


@pytest.mark.parametrize(("make", "ok"), PROVIDERS)
async def test_nobody_listening_is_connect(make: Factory, ok: dict):
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = await failure(make, f"http://127.0.0.1:{port}", RetryPolicy(attempts=2, base_delay=0.001, jitter=0.0))
    assert err.kind == "connect"


@pytest.mark.parametrize(("make", "ok"), PROVIDERS)
async def test_the_key_stays_out_of_logs(api: FakeApi, make: Factory, ok: dict, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    api.reply(json_reply(ok), Reply(500, f"echo {KEY}".encode()))
    client = make(api.base_url, FAST, 2.0)
    await client.search("q")
    with pytest.raises(SearchError):
        await client.search("q")
    await client.aclose()
    assert "HTTP Request" in caplog.text and KEY not in caplog.text
