"""`sandbox serve`: options with help, bad options refused, and a real run stopped with Ctrl-C."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from typer.testing import CliRunner

from researchrl.sandbox.cli import app

OPTIONS = ["--port", "--host", "--passages", "--seed", "--latency-ms", "--latency-p99-ms", "--fault-rate",
           "--rate-429", "--rate-500", "--rate-timeout", "--rate-truncated", "--rate-captcha", "--rate-garbage-json",
           "--rate-redirect-loop", "--rate-huge-page", "--rate-binary", "--rate-bad-encoding", "--huge-page-length",
           "--hang-s", "--retry-after-s", "--faults-on"]
SERVE = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
         "from researchrl.sandbox.cli import app; app()")


def test_serve_help_lists_every_option() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0
    for option in OPTIONS:
        assert re.search(rf"{option}\s+\S.*\S", result.output), option


def test_bad_fault_options_are_refused() -> None:
    assert CliRunner().invoke(app, ["serve", "--rate-500", "0.8", "--rate-429", "0.8"]).exit_code == 2
    assert CliRunner().invoke(app, ["serve", "--faults-on", "everything"]).exit_code == 2
    assert CliRunner().invoke(app, ["serve", "--fault-rate", "1.5"]).exit_code == 2
    assert CliRunner().invoke(app, ["serve", "--faults-on", "search,nowhere"]).exit_code == 2
    assert CliRunner().invoke(app, ["serve", "--huge-page-length", "sometimes"]).exit_code == 2
    assert CliRunner().invoke(app, ["serve", "--rate-binary", "0.6", "--rate-huge-page", "0.6"]).exit_code == 2


def test_missing_passages_are_one_red_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--port", "0", "--passages", str(tmp_path / "absent.jsonl")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'absent.jsonl'}: no such file"]


def test_a_taken_port_is_one_red_line(tmp_path: Path) -> None:
    passages = tmp_path / "passages.jsonl"
    passages.write_text('{"id": "1", "title": "Lilu", "text": "A lilu is a spirit."}\n', encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--port", str(port), "--passages", str(passages)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}: "), result.stderr


def test_serve_runs_until_ctrl_c() -> None:
    command = [sys.executable, "-c", SERVE, "serve", "--port", "0", "--rate-429", "1", "--faults-on", "search,reader"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}) as process:
        assert process.stdout is not None
        try:
            match = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline())
            assert match, "no base URL printed"
            url = match.group(0)
            assert httpx.post(f"{url}/search", json={"q": "Alû"}).status_code == 429
            assert httpx.get(f"{url}/wiki/Alû").status_code == 200
            assert httpx.post(f"{url}/v1/chat/completions", json={"messages": []}).status_code == 429
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=15) == 0
        finally:
            process.kill()
        output = process.stdout.read()
    assert "POST" in output and "/search" in output and "/wiki/" in output and "Stopped." in output
    assert "/v1/chat/completions" in output
