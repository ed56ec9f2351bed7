"""The managed vLLM server's lifecycle, against a stand-in `vllm` executable (no real vLLM needed).

The stand-in is a small Python script written into tmp_path: `serve MODEL --host H --port P ...` binds H:P and
answers GET /health with 200, and it starts a grandchild (`sleep 300`, like vLLM's engine processes) so the tests can
check that the whole process group goes away. STANDIN_MODE picks a misbehaviour: `exit` (prints an error line,
exits 3 at once), `exit_leaving_engine` (the same after starting the grandchild), `hang` (never serves /health),
`ignore_term` (ignores SIGTERM). Each run records its argv, environment, pids and parent-death signal as JSON in
$STANDIN_RECORD_DIR, which the fixture also uses to clean up whatever a failing test left behind.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from researchrl.errors import ConfigError
from researchrl.policy import vllm_server
from researchrl.policy.vllm_server import (
    EXTENSION,
    EXTENSION_DIR,
    SERVED_NAME,
    ServerSpec,
    VLLMServer,
    VLLMStartError,
    find_vllm,
)

STANDIN = """\
#!{python}
import ctypes, http.server, json, os, signal, subprocess, sys, time

args = sys.argv[1:]
mode = os.environ.get("STANDIN_MODE", "ok")
pdeathsig = ctypes.c_int(0)
ctypes.CDLL("libc.so.6").prctl(2, ctypes.byref(pdeathsig))  # PR_GET_PDEATHSIG
record = {{
    "argv": args, "pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0), "pdeathsig": pdeathsig.value,
    "env": {{k: os.environ.get(k) for k in ("PYTHONPATH", "VLLM_SERVER_DEV_MODE", "VLLM_CPU_KVCACHE_SPACE")}},
    "grandchild": None,
}}

def save():
    path = os.path.join(os.environ["STANDIN_RECORD_DIR"], "%d.json" % os.getpid())
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)

if mode == "exit":
    save()
    print("standin: RuntimeError: simulated engine failure", flush=True)
    sys.exit(3)

record["grandchild"] = subprocess.Popen(["sleep", "300"]).pid  # an engine process in the server's group
save()
if mode == "exit_leaving_engine":
    print("standin: RuntimeError: simulated API server failure", flush=True)
    sys.exit(3)
if mode == "ignore_term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "hang":
    print("standin: loading forever", flush=True)
    while True:
        time.sleep(1)

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass

host, port = args[args.index("--host") + 1], int(args[args.index("--port") + 1])
server = http.server.HTTPServer((host, port), Health)
print("standin: serving on %s:%d" % (host, port), flush=True)
server.serve_forever()
"""

CHILD_TRAINER = """\
import sys, time
from pathlib import Path
from researchrl.policy.vllm_server import ServerSpec, VLLMServer

server = VLLMServer(ServerSpec(model="m", startup_timeout=20, vllm_bin=sys.argv[1]), Path(sys.argv[2]))
server.start()
print(server.process.pid, flush=True)
time.sleep(300)
"""


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie nobody reaped yet counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `condition` until it holds or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        time.sleep(0.02)
    return True


def all_gone(*pids: int, timeout: float = 5.0) -> bool:
    """Every pid is gone within `timeout`."""
    return wait_until(lambda: all(gone(pid) for pid in pids), timeout)


class Standin:
    """The stand-in executable and the records its runs leave."""

    def __init__(self, root: Path):
        self.bin = root / "bin" / "vllm"
        self.records = root / "records"
        self.bin.parent.mkdir(parents=True)
        self.records.mkdir(parents=True)
        self.bin.write_text(STANDIN.format(python=sys.executable))
        self.bin.chmod(0o755)

    def record(self, pid: int | None = None, timeout: float = 5.0) -> dict:
        """The record of the run `pid` (or the only run), waiting for it to be written."""
        def ready() -> list[Path]:
            files = sorted(self.records.glob("*.json"))
            return [f for f in files if pid is None or f.stem == str(pid)]

        assert wait_until(lambda: bool(ready()), timeout), f"the stand-in wrote no record for pid {pid}"
        files = ready()
        assert len(files) == 1, files
        return json.loads(files[0].read_text())

    def cleanup(self) -> None:
        """SIGKILL whatever any run left behind (its process group and its grandchild)."""
        for file in self.records.glob("*.json"):
            record = json.loads(file.read_text())
            for kill, target in ((os.killpg, record["pgid"]), (os.kill, record["grandchild"])):
                if target and target != os.getpgid(0):
                    try:
                        kill(target, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Standin]:
    """A stand-in `vllm` in tmp_path; STANDIN_* env set for the children; leftovers killed after the test.

    A watchdog SIGKILLs the stand-ins after 30 s, so a start() that never times out fails instead of hanging.
    """
    fake = Standin(tmp_path / "standin")
    monkeypatch.setenv("STANDIN_RECORD_DIR", str(fake.records))
    monkeypatch.delenv("STANDIN_MODE", raising=False)
    watchdog = threading.Timer(30.0, fake.cleanup)
    watchdog.start()
    try:
        yield fake
    finally:
        watchdog.cancel()
        fake.cleanup()


def make_server(fake: Standin, tmp_path: Path, **spec: object) -> VLLMServer:
    """A VLLMServer that runs the stand-in, logging to tmp_path/logs/vllm.log."""
    return VLLMServer(ServerSpec(model="/models/tiny", vllm_bin=str(fake.bin), **spec), tmp_path / "logs" / "vllm.log")


def after(argv: list[str], flag: str) -> str:
    """The value following `flag` on a command line."""
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def test_start_serves_health_and_stop_kills_the_process_group(standin: Standin, tmp_path: Path) -> None:
    server = make_server(standin, tmp_path)
    url = server.start()
    process = server.process
    assert process is not None
    try:
        assert url == server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200

        record = standin.record(process.pid)
        argv = record["argv"]
        assert argv[:2] == ["serve", "/models/tiny"]
        assert after(argv, "--host") == "127.0.0.1"
        assert after(argv, "--port") == str(server.port)
        assert after(argv, "--worker-extension-cls") == EXTENSION == "researchrl_vllm_ext.ExactReload"
        assert after(argv, "--served-model-name") == SERVED_NAME == "policy"
        assert record["env"]["VLLM_SERVER_DEV_MODE"] == "1"
        assert str(EXTENSION_DIR) in record["env"]["PYTHONPATH"].split(os.pathsep)
        assert (EXTENSION_DIR / "researchrl_vllm_ext.py").is_file()  # the extension really is importable from there
        # its own session and process group, and SIGTERM when its parent dies
        assert record["pid"] == record["pgid"] == record["sid"] != os.getpgid(0)
        assert record["pdeathsig"] == signal.SIGTERM
        grandchild = record["grandchild"]
        assert os.getpgid(grandchild) == process.pid
        assert "standin: serving on 127.0.0.1" in server.log_path.read_text()
    finally:
        server.stop(grace=5)
    assert server.process is None
    assert process.returncode == -signal.SIGTERM  # the polite signal was enough
    assert all_gone(process.pid, grandchild), "stop() left the server or its engine process running"
    server.stop()  # twice is fine
    server.stop(grace=0.1)
    assert server.process is None


def test_context_manager_starts_and_stops(standin: Standin, tmp_path: Path) -> None:
    with make_server(standin, tmp_path) as server:
        assert server.process is not None
        pid = server.process.pid
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        grandchild = standin.record(pid)["grandchild"]
    assert server.process is None
    assert all_gone(pid, grandchild)


def test_child_exiting_at_start_raises_with_code_and_log_tail(
    standin: Standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_MODE", "exit")
    server = make_server(standin, tmp_path, startup_timeout=20)
    started = time.monotonic()
    with pytest.raises(VLLMStartError) as error:
        server.start()
    assert time.monotonic() - started < 10  # noticed the exit, did not wait for the timeout
    message = str(error.value)
    assert "exited with code 3" in message
    assert "standin: RuntimeError: simulated engine failure" in message
    assert str(server.log_path) in message
    assert server.process is None
    assert all_gone(standin.record()["pid"])


def test_engine_process_of_a_server_that_failed_to_start_is_killed(
    standin: Standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_MODE", "exit_leaving_engine")
    server = make_server(standin, tmp_path, startup_timeout=20)
    with pytest.raises(VLLMStartError, match="exited with code 3"):
        server.start()
    record = standin.record()
    assert all_gone(record["pid"])
    assert all_gone(record["grandchild"], timeout=2), "the failed server's engine process was left running"


def test_stop_after_the_server_crashed_kills_its_engine_processes(standin: Standin, tmp_path: Path) -> None:
    server = make_server(standin, tmp_path)
    server.start()
    process = server.process
    assert process is not None
    grandchild = standin.record(process.pid)["grandchild"]
    process.kill()  # the API server crashes (OOM killer, segfault); its engine process lives on
    process.wait(timeout=5)
    assert not gone(grandchild)
    server.stop(grace=0.5)
    assert all_gone(grandchild, timeout=2), "stop() left the crashed server's engine process running"


def test_start_ignores_proxy_settings_for_the_loopback_health_check(
    standin: Standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{vllm_server.free_port()}"  # a proxy nobody listens on
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = make_server(standin, tmp_path, startup_timeout=3)
    try:
        assert server.start() == server.url
    finally:
        server.stop(grace=5)


def test_child_never_healthy_times_out_and_is_stopped(
    standin: Standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_MODE", "hang")
    server = make_server(standin, tmp_path, startup_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(VLLMStartError, match=r"did not answer /health within 1.5 s") as error:
        server.start()
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 8, elapsed
    assert str(server.log_path) in str(error.value)
    assert server.process is None
    record = standin.record()
    assert all_gone(record["pid"], record["grandchild"]), "the timed-out server was left running"


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(
    standin: Standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STANDIN_MODE", "ignore_term")
    server = make_server(standin, tmp_path)
    server.start()
    process = server.process
    assert process is not None
    grandchild = standin.record(process.pid)["grandchild"]
    started = time.monotonic()
    server.stop(grace=0.5)
    elapsed = time.monotonic() - started
    assert process.returncode == -signal.SIGKILL  # SIGTERM was ignored: it took the SIGKILL
    assert 0.5 <= elapsed < 5, elapsed  # waited the grace, then did not wait long
    assert all_gone(process.pid, grandchild)


def test_server_dies_with_the_trainer_that_started_it(standin: Standin, tmp_path: Path) -> None:
    trainer = subprocess.Popen(
        [sys.executable, "-c", CHILD_TRAINER, str(standin.bin), str(tmp_path / "trainer-vllm.log")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = trainer.stdout.readline()  # blocks until the server is healthy, or "" if the trainer died
        if not line.strip().isdigit():
            trainer.kill()
            pytest.fail(f"the trainer did not start the server: {line!r}\n{trainer.stderr.read()}")
        server_pid = int(line)
        server = psutil.Process(server_pid)
        assert server.ppid() == trainer.pid and not gone(server_pid)
        trainer.kill()  # SIGKILL: no finally, no atexit, no stop()
        trainer.wait(timeout=5)
        assert all_gone(server_pid), "the vLLM server outlived the trainer that started it"
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
        trainer.stdout.close()
        trainer.stderr.close()


# ---- find_vllm ----------------------------------------------------------------------------------------------


def executable(path: Path) -> Path:
    """An executable stub at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No vLLM anywhere: empty PATH, no $RESEARCHRL_VLLM_BIN, cwd and 'checkout' (the module's __file__) in tmp_path."""
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("RESEARCHRL_VLLM_BIN", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    checkout = tmp_path / "checkout"
    monkeypatch.setattr(vllm_server, "__file__", str(checkout / "src" / "researchrl" / "policy" / "vllm_server.py"))
    return tmp_path


@pytest.mark.parametrize("kind", ["not executable", "missing", "directory"])
def test_find_vllm_rejects_a_configured_path_that_is_not_an_executable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setenv("RESEARCHRL_VLLM_BIN", str(executable(tmp_path / "env" / "vllm")))  # must not rescue it
    configured = tmp_path / "configured" / "vllm"
    if kind == "not executable":
        executable(configured).chmod(stat.S_IRUSR | stat.S_IWUSR)
    elif kind == "directory":
        configured.mkdir(parents=True)
    with pytest.raises(ConfigError) as error:
        find_vllm(str(configured))
    assert str(configured) in str(error.value)
    assert "scripts/vllm.sh" in str(error.value)


def test_find_vllm_precedence(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = executable(isolated / "pathdir" / "vllm")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_vllm() == str(on_path)

    in_checkout = executable(isolated / "checkout" / ".venv-vllm" / "bin" / "vllm")
    assert find_vllm() == str(in_checkout)  # the checkout's .venv-vllm beats PATH

    in_cwd = executable(isolated / "work" / ".venv-vllm" / "bin" / "vllm")
    assert find_vllm() == str(in_cwd)  # ./.venv-vllm beats the checkout's

    from_env = executable(isolated / "env" / "vllm")
    monkeypatch.setenv("RESEARCHRL_VLLM_BIN", str(from_env))
    assert find_vllm() == find_vllm("") == str(from_env)  # $RESEARCHRL_VLLM_BIN beats the venvs

    configured = executable(isolated / "configured" / "vllm")
    assert find_vllm(str(configured)) == str(configured)  # a configured path beats everything


def test_find_vllm_skips_a_non_executable_env_path(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = isolated / "env" / "vllm"
    executable(broken).chmod(stat.S_IRUSR | stat.S_IWUSR)
    monkeypatch.setenv("RESEARCHRL_VLLM_BIN", str(broken))
    in_cwd = executable(isolated / "work" / ".venv-vllm" / "bin" / "vllm")
    assert find_vllm() == str(in_cwd)


def test_find_vllm_none_found_raises_with_the_install_hint(isolated: Path) -> None:
    with pytest.raises(ConfigError, match=r"none was found.*scripts/vllm\.sh"):
        find_vllm()


def test_server_command_uses_the_env_executable(
    standin: Standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESEARCHRL_VLLM_BIN", str(standin.bin))
    server = VLLMServer(ServerSpec(model="/models/tiny"), tmp_path / "vllm.log")  # no vllm_bin configured
    assert server.command()[0] == str(standin.bin)
    other = executable(tmp_path / "configured" / "vllm")
    server = VLLMServer(ServerSpec(model="/models/tiny", vllm_bin=str(other)), tmp_path / "vllm.log")
    assert server.command()[0] == str(other)
