"""A vLLM OpenAI server that researchrl starts, health-checks and always stops (`use_vllm` with `vllm = "managed"`).

vLLM lives in its own virtual environment (`bash scripts/vllm.sh` builds `.venv-vllm`: its transformers pin
conflicts with ours), so the server is a child process, never an import. It binds 127.0.0.1 on a free port, runs
in its own process group with a parent-death signal (a killed trainer leaves no server behind), writes its log to a
file, and loads our worker extension (`researchrl_vllm_ext`) for the exact CPU weight reload; `VLLM_SERVER_DEV_MODE`
opens the /collective_rpc and /reset_prefix_cache endpoints that reload uses, on loopback only.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from researchrl.errors import ConfigError, UserError

EXTENSION_DIR = Path(__file__).resolve().parent / "vllm_ext"  # on the server's PYTHONPATH, not a package of ours
EXTENSION = "researchrl_vllm_ext.ExactReload"
SERVED_NAME = "policy"  # the model name the server answers to
INSTALL_HINT = "build vLLM's CPU engine with `bash scripts/vllm.sh` (creates .venv-vllm) or set vllm_bin to a `vllm` executable"


class VLLMStartError(UserError):
    """The vLLM server did not come up: the message names the cause and the server's log."""


def find_vllm(configured: str = "") -> str:
    """The `vllm` executable: the configured one, $RESEARCHRL_VLLM_BIN, .venv-vllm here or in the checkout, else PATH."""
    candidates = [configured, os.environ.get("RESEARCHRL_VLLM_BIN", "")]
    checkout = Path(__file__).resolve().parents[3]  # an editable install's repository root
    candidates += [str(Path.cwd() / ".venv-vllm" / "bin" / "vllm"), str(checkout / ".venv-vllm" / "bin" / "vllm")]
    for candidate in filter(None, candidates):
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
        if candidate == configured:
            raise ConfigError(f"vllm_bin={configured!r} is not an executable file; {INSTALL_HINT}")
    on_path = shutil.which("vllm")
    if on_path:
        return on_path
    raise ConfigError(f"use_vllm needs vLLM and none was found: {INSTALL_HINT}")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with(parent: int) -> Callable[[], None]:
    """In the child before exec: its own process group, and SIGTERM when `parent` (the trainer) dies."""

    def setup() -> None:
        os.setsid()
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return setup


@dataclass(frozen=True)
class ServerSpec:
    """What the server serves and how."""

    model: str  # a local checkpoint directory (config.json, safetensors, tokenizer)
    dtype: str = "float32"  # must match the trainer's weights for logprobs to agree
    max_model_len: int = 8192  # longest context (prompt + completion) in tokens
    seed: int = 0  # vLLM's sampling seed
    kv_cache_gib: int = 2  # CPU memory for the KV cache (VLLM_CPU_KVCACHE_SPACE)
    startup_timeout: float = 600.0  # seconds to wait for /health
    vllm_bin: str = ""  # the `vllm` executable; "" = find_vllm()


class VLLMServer:
    """One managed `vllm serve` child process; use as a context manager or call start() / stop()."""

    def __init__(self, spec: ServerSpec, log_path: Path):
        self.spec = spec
        self.log_path = log_path
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL (the OpenAI API is under /v1)."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The `vllm serve` command line."""
        spec = self.spec
        return [
            find_vllm(spec.vllm_bin), "serve", spec.model, "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", spec.dtype, "--max-model-len", str(spec.max_model_len), "--seed", str(spec.seed),
            "--served-model-name", SERVED_NAME, "--worker-extension-cls", EXTENSION,
            "--logprobs-mode", "processed_logprobs",  # after temperature: what TRL's importance ratio compares with
        ]

    def start(self) -> str:
        """Start the server and wait until it answers /health; returns its URL."""
        self.port = free_port()
        command = self.command()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(EXTENSION_DIR), os.environ.get("PYTHONPATH", "")])),
            "VLLM_SERVER_DEV_MODE": "1",
            "VLLM_CPU_KVCACHE_SPACE": str(self.spec.kv_cache_gib),
            "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
            "VLLM_NO_USAGE_STATS": "1",
            "VLLM_LOGGING_COLOR": "0",
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with(os.getpid())
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.url

    def _wait_ready(self) -> None:
        """Poll /health until it answers 200, the process dies, or the startup timeout passes."""
        deadline = time.monotonic() + self.spec.startup_timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise VLLMStartError(
                    f"vLLM exited with code {self.process.returncode} while starting; last lines of {self.log_path}:\n"
                    + self.log_tail()
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0, trust_env=False).status_code == 200:  # loopback: no proxy
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        raise VLLMStartError(
            f"vLLM did not answer /health within {self.spec.startup_timeout:g} s; last lines of {self.log_path}:\n"
            + self.log_tail()
        )

    def log_tail(self, lines: int = 15) -> str:
        """The end of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after `grace` seconds; safe to call twice."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(process.pid, sig)
                    process.wait(timeout=wait)
                    break
                except ProcessLookupError:
                    return
                except subprocess.TimeoutExpired:
                    continue
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever of its engine processes outlived it
        except ProcessLookupError:
            pass

    def __enter__(self) -> VLLMServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
