"""Join Ray: a local instance by default or a cluster by address; Ray is an optional extra, imported on first use."""

from __future__ import annotations

import threading
from types import ModuleType

NAMESPACE = "researchrl"  # actors of every researchrl pool live here, apart from other Ray jobs

_lock = threading.Lock()
_holders = 0  # pools using a Ray connection that this module opened; the last one to leave shuts it down


def require_ray() -> ModuleType:
    """The `ray` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("researchrl.distributed needs Ray: pip install 'researchrl[ray]'") from err
    return ray


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
