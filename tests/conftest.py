"""Fixtures shared across the suite: the shared data folder, the embedded model's tokenizer, a real Redis server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from researchrl.sandbox.config import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (or $RESEARCHRL_SHARED_DATA)."""
    path = shared_data_dir()
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def smol_tokenizer():  # noqa: ANN201
    """The embedded SmolLM2 tokenizer (converted once by the set-up, offline)."""
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from researchrl.policy.embedded import embedded_checkpoint
    from researchrl.policy.tokenizers import HFChatTokenizer

    return HFChatTokenizer(AutoTokenizer.from_pretrained(embedded_checkpoint()))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port, no persistence; stopped when the session ends."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not on PATH; install it (apt-get install redis-server): the Redis tests need a real one")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"redis-server did not answer PING on port {port}: {log.read().decode()[-500:]}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
