"""`researchrl serve tools` through the MCP SDK's own client, over stdio and streamable HTTP, against the sandbox.

Each server is the real command in its own process (`researchrl serve tools`), on loopback only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters  # noqa: E402 - after the skip: the serve extra may be missing

from researchrl.errors import MissingDependency  # noqa: E402
from researchrl.serve.tools import USAGE_URI, require_sdk, tools_command  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SERVER = [sys.executable, "-m", "researchrl.cli", "serve", "tools"]
# every sandbox request faults; one try each, and with seed 0 the first request draws a 500
FAULTS = ["--set", "env.sandbox_faults=1.0", "--set", "env.sandbox_seed=0",
          "--set", "env.search_retry.attempts=1", "--set", "env.fetch.retry.attempts=1"]
QUESTION = "Who founded Little Caesars?"
METADATA = "http://169.254.169.254/latest/meta-data"  # the cloud metadata address: the SSRF guard refuses it
PASSED_ENV = ("RESEARCHRL_SHARED_DATA",)  # the stdio client passes only a safe minimum of the environment


def free_port() -> int:
    """A loopback port free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def http_server(*flags: str) -> Iterator[str]:
    """The command serving streamable HTTP on a free loopback port; yields its URL; on exit SIGTERM, and a clean stop.

    uvicorn shuts down (the lifespan closes the environment), then re-raises the signal: exit -SIGTERM is clean.
    """
    port = free_port()
    proc = subprocess.Popen([*SERVER, "--transport", "http", "--port", str(port), *flags], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"the server exited: {proc.stderr.read().decode()}"  # type: ignore[union-attr]
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            assert time.monotonic() < deadline, "the server did not listen within 30 s"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert code in (0, -signal.SIGTERM) and "Traceback" not in stderr and "failed" not in stderr, stderr


@contextlib.asynccontextmanager
async def connect(transport: str, *flags: str) -> AsyncIterator[Client]:
    """An SDK client of a fresh server: spawned over stdio, or started over HTTP."""
    if transport == "stdio":
        env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        params = StdioServerParameters(command=sys.executable, args=[*SERVER[1:], *flags], cwd=ROOT, env=env)
        async with Client(params) as client:
            yield client
        return
    with http_server(*flags) as url:
        async with Client(url) as client:
            yield client


async def usage(client: Client) -> dict[str, float]:
    """The ledger's totals, read from the usage resource."""
    result = await client.read_resource(USAGE_URI)
    return json.loads(result.contents[0].text)["metrics"]


def text(result) -> str:  # noqa: ANN001 - a CallToolResult
    """A tool result's text content."""
    return "\n".join(block.text for block in result.content)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_search_browse_cache_and_ssrf(transport: str, shared_data: Path) -> None:
    async with connect(transport) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(listed) == {"web_search", "browse_webpage", "web_usage"}
        assert {"query", "top_k"} <= set(listed["web_search"].input_schema["properties"])
        assert {"url_list", "question"} <= set(listed["browse_webpage"].input_schema["properties"])
        for tool in listed.values():
            assert tool.description and tool.output_schema is not None

        found = await client.call_tool("web_search", {"query": [QUESTION], "top_k": 3})
        assert not found.is_error, text(found)
        hits = found.structured_content["searches"][0]["results"]
        assert 0 < len(hits) <= 3
        page = next(hit["url"] for hit in hits if hit["title"] == "Little Caesars")
        assert "/wiki/" in page and page in text(found)

        before = await usage(client)
        again = await client.call_tool("web_search", {"query": QUESTION, "top_k": 3})  # one string: the same search
        after = await usage(client)
        assert again.structured_content == found.structured_content
        assert after["web/hits/search/sandbox"] == before["web/hits/search/sandbox"] + 1
        assert after["web/calls/search/sandbox"] == before["web/calls/search/sandbox"] == 1

        read = await client.call_tool("browse_webpage", {"url_list": [page], "question": QUESTION})
        assert not read.is_error, text(read)
        excerpts = read.structured_content["pages"][0]["excerpts"]
        assert excerpts and "founded" in excerpts[0]["text"] and "founded" in text(read)

        refused = await client.call_tool("browse_webpage", {"url_list": [METADATA]})
        assert refused.is_error and "ssrf_refused" in text(refused) and METADATA in text(refused)

        mixed = await client.call_tool("browse_webpage", {"url_list": [page, METADATA], "question": QUESTION})
        assert not mixed.is_error  # some read: a result, the failed URL named in it
        assert [p["error"] for p in mixed.structured_content["pages"]] == [None, "ssrf_refused"]
        assert "ssrf_refused" in text(mixed)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_injected_fault_is_a_tool_error(transport: str, shared_data: Path) -> None:
    async with connect(transport, *FAULTS) as client:
        failed = await client.call_tool("web_search", {"query": QUESTION})
        assert failed.is_error and "search_http_500" in text(failed), text(failed)

        cost = await client.call_tool("web_usage", {})  # the server still answers, and counted the call
        assert not cost.is_error and cost.structured_content["metrics"]["web/calls/search/sandbox"] == 1
        again = await client.call_tool("web_search", {"query": "Little Caesars founder"})
        assert again.is_error and "web_search failed: search_" in text(again)
        assert {tool.name for tool in (await client.list_tools()).tools} >= {"web_search", "browse_webpage"}


def run_command(*args: str) -> tuple[int, str]:
    """The command in process: exit code and what it printed."""
    app = typer.Typer()
    app.command()(tools_command)
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_user_mistakes_are_one_line() -> None:
    code, out = run_command("--transport", "carrier-pigeon")
    assert code == 2 and "--transport must be one of stdio, http" in out
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, out = run_command("--transport", "http", "--port", str(taken.getsockname()[1]))
    assert code == 2 and "cannot listen on 127.0.0.1" in out
    code, out = run_command("--search", "local")
    assert code == 2 and "search local needs a corpus" in out


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mcp.server.mcpserver", None)  # its import now fails
    with pytest.raises(MissingDependency, match=r"pip install 'researchrl\[serve\]'"):
        require_sdk()
