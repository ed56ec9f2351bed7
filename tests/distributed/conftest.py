"""A local Ray instance (2 CPUs) for the whole session, and sandbox servers the workers reach over loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from researchrl.sandbox.config import SandboxConfig, shared_data_dir
from researchrl.sandbox.faults import FaultConfig
from researchrl.sandbox.server import SandboxServer

ray = pytest.importorskip("ray")

if not (shared_data_dir() / "wiki" / "passages.jsonl").exists():
    pytest.skip("needs ../shared/data (or $RESEARCHRL_SHARED_DATA)", allow_module_level=True)


@pytest.fixture(scope="session", autouse=True)
def ray_cluster() -> Iterator[None]:
    """Ray on this machine, started once; workers get the sandbox's placeholder Serper key (it checks none)."""
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="researchrl-tests",
            runtime_env={"env_vars": {"SERPER_API_KEY": "sandbox"}},
        )
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """One fault-free sandbox shared by the tests that only read from it."""
    with SandboxServer() as server:
        yield server


def host(server: SandboxServer) -> str:
    """The "host:port" a fetcher must allowlist to reach `server`."""
    return server.url.removeprefix("http://")


def start_faulty(**faults: object) -> SandboxServer:
    """A started sandbox with these FaultConfig fields (the caller stops it)."""
    return SandboxServer(SandboxConfig(faults=FaultConfig(**faults))).start()  # type: ignore[arg-type]
