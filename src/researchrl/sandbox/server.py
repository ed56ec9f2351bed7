"""Run the sandbox with uvicorn in a background thread, for tests, benchmarks and the CLI, or in a process of its own
(`spawn_sandbox`, benchmarks: its CPU apart from the client's); and a connect-timeout Blackhole."""

from __future__ import annotations

import asyncio
import errno
import logging
import select
import socket
import subprocess
import sys
import threading
import time

import httpx
import uvicorn

from researchrl.errors import UserError
from researchrl.sandbox.app import create_app
from researchrl.sandbox.config import SandboxConfig
from researchrl.sandbox.faults import FaultCounters

TRUNCATION_LOG = "ASGI callable returned without completing response."


class _HideInjectedTruncation(logging.Filter):
    """uvicorn logs an error for every body the sandbox truncates on purpose; those are counted, not errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != TRUNCATION_LOG


_UVICORN_LOG = logging.getLogger("uvicorn.error")
if not any(isinstance(f, _HideInjectedTruncation) for f in _UVICORN_LOG.filters):
    _UVICORN_LOG.addFilter(_HideInjectedTruncation())


class SandboxServer:
    """The sandbox on loopback in a background thread; use `with` (or `async with`) to start and stop it."""

    def __init__(self, config: SandboxConfig | None = None, graceful_shutdown_s: float = 2.0):
        self.config = config or SandboxConfig()
        self.counters = FaultCounters()
        self.graceful_shutdown_s = graceful_shutdown_s
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def host(self) -> str:
        """The address the server binds."""
        return self.config.host

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321 (available once started)."""
        if self.port is None:
            raise RuntimeError("the sandbox server is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def faults(self) -> dict[str, int]:
        """Faultable requests seen and faults injected so far, by kind."""
        return self.counters.snapshot()

    def start(self, timeout_s: float = 30.0) -> SandboxServer:
        """Bind, build the app (index cached per passages file), serve in a thread and wait until ready."""
        if self._thread is not None:
            raise RuntimeError("the sandbox server is already running")
        app = create_app(self.config, self.counters)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so (else Nagle adds 40 ms a response).
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((self.host, self.config.port))
        except (OSError, OverflowError) as err:  # the port is taken or out of 0-65535, or the host is not ours
            self._socket.close()
            self._socket = None
            raise UserError(f"cannot listen on {self.host}:{self.config.port}: {getattr(err, 'strerror', None) or err}") from None
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", http="h11", ws="none",
            timeout_graceful_shutdown=max(1, round(self.graceful_shutdown_s)),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name=f"sandbox-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the sandbox server did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit, join its thread and release the socket."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=self.graceful_shutdown_s + 10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        self.port = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> SandboxServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


def spawn_sandbox(port: int, seed: int, *flags: str, ready_s: float = 60.0) -> subprocess.Popen:
    """`researchrl sandbox serve` on `port` with `flags` (latency, faults) in its own process, returned once it answers."""
    cmd = [sys.executable, "-m", "researchrl.cli", "sandbox", "serve", "--port", str(port), "--seed", str(seed), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_faults", timeout=1, trust_env=False).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the sandbox did not answer on port {port} within {ready_s:.0f} s")


class Blackhole:
    """A loopback port where connecting times out: it listens, its accept queue is full, and it never accepts.

    An HTTP app cannot produce a connect timeout (the connection is accepted before it runs), so clients'
    connect-timeout handling is exercised against `url` instead. On Linux a SYN that finds the accept queue
    full is dropped (unless net.ipv4.tcp_abort_on_overflow=1, which resets it; `start` then fails loudly),
    so the client retransmits until its connect timeout passes. Use `with Blackhole() as hole: ... hole.url`.
    """

    MAX_FILLERS = 8  # connections parked in the queue to fill it (listen(0) takes one or two)
    FILL_PROBE_S = 0.2  # a filler still unconnected after this long means the queue is full

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port: int | None = None
        self._listener: socket.socket | None = None
        self._fillers: list[socket.socket] = []

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321 (available once started)."""
        if self.port is None:
            raise RuntimeError("the blackhole is not open")
        return f"http://{self.host}:{self.port}"

    def start(self) -> Blackhole:
        """Listen with the smallest backlog and park connections in it until one is left hanging."""
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((self.host, 0))
        self._listener.listen(0)
        self.port = self._listener.getsockname()[1]
        for _ in range(self.MAX_FILLERS):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            self._fillers.append(filler)
            filler.connect_ex((self.host, self.port))
            _, done, _ = select.select([], [filler], [], self.FILL_PROBE_S)
            if not done:
                return self  # this SYN was dropped: the queue is full and every later connect will hang
            if filler.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED:
                self.stop()
                raise RuntimeError("the kernel refuses connections past the backlog (tcp_abort_on_overflow?)")
        self.stop()
        raise RuntimeError(f"the accept queue did not fill after {self.MAX_FILLERS} connections")

    def stop(self) -> None:
        """Close the parked connections and the listening socket."""
        for filler in self._fillers:
            filler.close()
        if self._listener is not None:
            self._listener.close()
        self._fillers, self._listener, self.port = [], None, None

    def __enter__(self) -> Blackhole:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
