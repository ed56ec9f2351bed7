"""Fault injection: each kind as a client sees it, seeded and reproducible, counted, and scoped to its targets."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import httpx
import pytest

from researchrl.sandbox.faults import APPLIES_TO, TARGETS, FaultConfig
from researchrl.sandbox.server import SandboxServer

Faulty = Callable[..., AbstractContextManager[SandboxServer]]
PAGE = "/wiki/Alû"


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        FaultConfig(rate_429=0.6, rate_500=0.6)
    with pytest.raises(ValueError):
        FaultConfig(rate_captcha=-0.1)
    with pytest.raises(ValueError):
        FaultConfig(latency_ms=100, latency_p99_ms=50)
    with pytest.raises(ValueError):
        FaultConfig(targets=("search", "everything"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FaultConfig(rate_garbage_json=0.6, rate_500=0.6)  # both hit search and the reader
    with pytest.raises(ValueError):
        FaultConfig(huge_page_length="sometimes")  # type: ignore[arg-type]
    FaultConfig(rate_garbage_json=0.6, rate_huge_page=0.6)  # no endpoint gets both: each target stays under 1


def _old_draw(rates: list[float], seed: int, n: int) -> str | None:
    """The draw as it was with the original five kinds, kept here to pin their seeded sequences."""
    u, acc = random.Random(f"{seed}/{n}").random(), 0.0
    for kind, rate in zip(("http_429", "http_500", "timeout", "truncated", "captcha"), rates):
        acc += rate
        if u < acc:
            return kind
    return None


def test_old_seeded_sequences_are_unchanged_while_new_rates_are_zero() -> None:
    rates = [0.05, 0.1, 0.05, 0.1, 0.2]
    config = FaultConfig(seed=5, rate_429=0.05, rate_500=0.1, rate_timeout=0.05, rate_truncated=0.1, rate_captcha=0.2)
    for n in range(3000):
        old = _old_draw(rates, 5, n)
        assert config.draw(n)[0] == config.draw(n, "search")[0] == config.draw(n, "pages")[0] == old


def test_a_kind_is_drawn_only_at_targets_it_applies_to() -> None:
    config = FaultConfig(rate_captcha=0.3, rate_huge_page=0.3, rate_garbage_json=0.3)
    drawn = {target: {config.draw(n, target)[0] for n in range(500)} for target in TARGETS}
    assert drawn == {"search": {"captcha", "garbage_json", None}, "pages": {"captcha", "huge_page", None},
                     "reader": {"garbage_json", None}}
    assert all(target in APPLIES_TO[kind] for target, kinds in drawn.items() for kind in kinds - {None})


def test_huge_page_length_coin_is_seeded() -> None:
    either = FaultConfig(seed=3)
    coins = [either.declares_length(n) for n in range(64)]
    assert set(coins) == {True, False} and coins == [FaultConfig(seed=3).declares_length(n) for n in range(64)]
    assert coins != [FaultConfig(seed=4).declares_length(n) for n in range(64)]
    assert all(FaultConfig(huge_page_length="declared").declares_length(n) for n in range(8))
    assert not any(FaultConfig(huge_page_length="chunked").declares_length(n) for n in range(8))


def test_lognormal_latency_has_the_asked_median_and_p99() -> None:
    config = FaultConfig(latency_ms=50, latency_p99_ms=400)
    latencies = sorted(config.draw(n)[1] * 1000 for n in range(20_000))
    assert statistics.median(latencies) == pytest.approx(50, rel=0.05)
    assert latencies[int(0.99 * len(latencies))] == pytest.approx(400, rel=0.1)
    assert FaultConfig(latency_ms=20).draw(3) == (None, 0.02)


def test_latency_is_applied(faulty: Faulty) -> None:
    with faulty(latency_ms=200) as server:
        start = time.perf_counter()
        assert httpx.get(server.url + PAGE).status_code == 200
        assert time.perf_counter() - start >= 0.2


def test_429_has_retry_after(faulty: Faulty) -> None:
    with faulty(rate_429=1.0, retry_after_s=3) as server:
        search = httpx.post(f"{server.url}/search", json={"q": "Alû"})
        page = httpx.get(server.url + PAGE)
        assert server.faults["http_429"] == 2
    assert search.status_code == 429 and search.headers["retry-after"] == "3"
    assert search.json() == {"message": "Too Many Requests", "statusCode": 429}
    assert page.status_code == 429 and page.headers["retry-after"] == "3" and "429 Too Many Requests" in page.text


def test_500(faulty: Faulty) -> None:
    with faulty(rate_500=1.0) as server:
        assert httpx.post(f"{server.url}/search", json={"q": "Alû"}).status_code == 500
        assert httpx.get(server.url + PAGE).status_code == 500


def test_captcha_is_a_200_robot_check(faulty: Faulty) -> None:
    with faulty(rate_captcha=1.0) as server:
        page = httpx.get(server.url + PAGE)
    assert page.status_code == 200 and "Are you a robot?" in page.text and "Alû" not in page.text


def test_truncated_body_fails_in_the_client(faulty: Faulty) -> None:
    with faulty(rate_truncated=1.0) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete|complete message body"):
            httpx.get(server.url + PAGE)
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(f"{server.url}/search", json={"q": "Alû"})
        assert server.faults["truncated"] == 2


def test_timeout_hangs_past_the_client_read_timeout(faulty: Faulty) -> None:
    with faulty(rate_timeout=1.0, hang_s=2) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(server.url + PAGE, timeout=httpx.Timeout(5.0, read=0.3))
        start = time.perf_counter()
    assert time.perf_counter() - start < 2.0  # the abandoned hang does not hold up shutdown


def test_a_patient_client_gets_the_page_after_the_hang(faulty: Faulty) -> None:
    with faulty(rate_timeout=1.0, hang_s=0.5) as server:
        start = time.perf_counter()
        assert httpx.get(server.url + PAGE, timeout=5).status_code == 200
        assert time.perf_counter() - start >= 0.5


def test_targets_scope_faults_and_health_is_never_faulted(faulty: Faulty) -> None:
    with faulty(rate_500=1.0, targets=("search",)) as server:
        assert httpx.get(server.url + PAGE).status_code == 200
        assert httpx.post(f"{server.url}/search", json={"q": "Alû"}).status_code == 500
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.get(f"{server.url}/_faults").json() == server.faults == {
            "requests": 1, "http_429": 0, "http_500": 1, "timeout": 0, "truncated": 0, "captcha": 0,
            "garbage_json": 0, "redirect_loop": 0, "huge_page": 0, "binary": 0, "bad_encoding": 0}


def _outcomes(server: SandboxServer, n: int) -> list[str]:
    """What a sequential client sees for n searches: ok, http_429, http_500, captcha or truncated."""
    seen = []
    with httpx.Client(base_url=server.url) as client:
        for i in range(n):
            try:
                response = client.post("/search", json={"q": f"river {i}", "num": 3})
            except httpx.RemoteProtocolError:
                seen.append("truncated")
                continue
            if response.status_code != 200:
                seen.append(f"http_{response.status_code}")
            else:
                seen.append("captcha" if "Are you a robot?" in response.text else "ok")
    return seen


def test_seeded_fault_rate_is_reproducible_and_counted(faulty: Faulty) -> None:
    rates = dict(rate_429=0.075, rate_500=0.075, rate_truncated=0.075, rate_captcha=0.075)
    with faulty(seed=7, **rates) as server:
        first = _outcomes(server, 200)
        counts = server.faults
    faults = [kind for kind in first if kind != "ok"]
    assert 0.2 <= len(faults) / 200 <= 0.4
    assert counts["requests"] == 200 and len(set(faults)) == 4
    assert all(counts[kind] == faults.count(kind) for kind in ("http_429", "http_500", "truncated", "captcha"))
    with faulty(seed=7, **rates) as server:
        assert _outcomes(server, 200) == first
    with faulty(seed=8, **rates) as server:
        assert _outcomes(server, 200) != first
