"""Join Ray: a local instance by default or a cluster by address; Ray is an optional extra, imported on first use."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable
from types import ModuleType
from typing import Any

from researchrl.errors import MissingDependency

log = logging.getLogger("researchrl")
NAMESPACE = "researchrl"  # actors of every researchrl pool live here, apart from other Ray jobs

_lock = threading.Lock()
_holders = 0  # pools using a Ray connection that this module opened; the last one to leave shuts it down


def require_ray() -> ModuleType:
    """The `ray` module, or a MissingDependency that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise MissingDependency("ray", "ray") from err
    return ray


@functools.cache
def actor_class(cls: type, max_concurrency: int) -> Any:  # noqa: ANN401
    """`cls` as a Ray actor class, made once per process (Ray is imported only here, when a pool starts)."""
    return require_ray().remote(max_concurrency=max_concurrency)(cls)


async def stop_actors(actors: list[Any], closing: list[Awaitable[Any]], timeout: float) -> None:
    """Let actors close their clients for up to `timeout` seconds, then kill them; what did not close is logged."""
    try:
        await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), timeout)
    except asyncio.TimeoutError:
        log.warning("%d Ray workers did not close within %.0f s; killing them", len(actors), timeout)
    for actor in actors:
        kill(actor)


def kill(actor: Any) -> None:  # noqa: ANN401
    """Kill one actor; one that cannot be killed (already gone with its node) is logged, not raised."""
    try:
        require_ray().kill(actor)
    except Exception as err:  # noqa: BLE001 - Ray raises several types here; the actor is being dropped either way
        log.warning("could not kill Ray actor %s: %s", actor, err)


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Make sure this process is connected to Ray; True when the connection is ours to close (`shutdown_if_ours`).

    `address=None` starts a local instance (`num_cpus` caps it); an address ("auto", "ray://host:10001")
    joins a running cluster. A Ray that someone else initialized in this process is reused and left alone.
    """
    global _holders
    ray = require_ray()
    with _lock:
        if ray.is_initialized():
            if _holders == 0:
                return False
            _holders += 1
            return True
        options = {"num_cpus": num_cpus} if num_cpus is not None else {}
        ray.init(address=address, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False, **options)
        _holders = 1
        return True


def shutdown_if_ours(ours: bool) -> None:
    """Release a connection `connect` returned True for; Ray shuts down when its last holder leaves."""
    global _holders
    if not ours:
        return
    ray = require_ray()
    with _lock:
        _holders = max(0, _holders - 1)
        if _holders == 0 and ray.is_initialized():
            ray.shutdown()
