"""A real redis-server on a loopback port, no persistence, that a test can kill and start again on the same port."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pings(port: int) -> bool:
    """Whether a server on `port` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process at a time on `port`: `start` waits for PING, `kill` is SIGKILL (a crash, data lost)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Run redis-server and wait until it answers PING (fails the test when it does not)."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on PATH (apt-get install redis-server): the Redis tests need a real one")
        self._proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not _pings(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._log.seek(0)
                pytest.fail(f"redis-server did not answer PING on port {self.port}: {self._log.read().decode()[-500:]}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: open connections drop, every key is gone."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        """Terminate the server (killed if it does not exit within 5 s) and close its log."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        self._log.close()
