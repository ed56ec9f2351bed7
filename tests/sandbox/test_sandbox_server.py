"""SandboxServer starts on loopback, serves from sync and async code, and stops with its thread joined; Blackhole hangs connects."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from researchrl.sandbox.config import SandboxConfig
from researchrl.sandbox.server import Blackhole, SandboxServer


def test_starts_on_a_free_loopback_port_and_stops_cleanly() -> None:
    with SandboxServer() as server, SandboxServer() as other:
        assert server.host == "127.0.0.1" and server.url == f"http://127.0.0.1:{server.port}"
        assert server.port != other.port
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        thread = server._thread
        port = server.port
    assert thread is not None and not thread.is_alive()
    assert not any(t.name == f"sandbox-{port}" for t in threading.enumerate())
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_given_port_is_used() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with SandboxServer(SandboxConfig(port=port)) as server:
        assert server.url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{server.url}/healthz").status_code == 200


async def test_async_context_manager() -> None:
    async with SandboxServer() as server, httpx.AsyncClient() as client:
        response = await client.post(f"{server.url}/search", json={"q": "Christopher Nolan", "num": 1})
        assert response.json()["organic"][0]["title"] == "Christopher Nolan"
    assert server.port is None


def test_blackhole_connects_time_out_instead_of_being_refused() -> None:
    with Blackhole() as hole:
        assert hole.url == f"http://127.0.0.1:{hole.port}"
        for _ in range(2):  # the queue stays full: every attempt hangs, none is refused
            start = time.perf_counter()
            with pytest.raises(httpx.ConnectTimeout):
                httpx.get(hole.url, timeout=httpx.Timeout(5.0, connect=0.3))
            assert 0.25 <= time.perf_counter() - start < 3.0
        port = hole.port
    with pytest.raises(httpx.ConnectError):  # once stopped, the port refuses at once
        httpx.get(f"http://127.0.0.1:{port}", timeout=httpx.Timeout(5.0, connect=2.0))
