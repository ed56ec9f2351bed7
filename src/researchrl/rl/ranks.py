"""Several training processes on one run (`accelerate launch --multi_gpu --num_processes N`, or `torchrun`).

A process started without a launcher is a world of one: every helper answers at once and torch.distributed is
never imported. Under a launcher, the first helper called starts the process group (gloo on CPU, NCCL on GPUs)
with a timeout long enough for the phases main runs alone (held-out evaluations, expert demonstrations) while the
others wait at a barrier; HF's Trainer and TRL then reuse that group. Collectives go through torch.distributed
itself: HF's TrainingArguments resets accelerate's shared state, after which a bare `PartialState()` on a CPU
machine would describe a world of one. The group is destroyed at exit: a process leaving with it alive while its
peer is still running can die with SIGABRT ("terminate called without an active exception"), failing the launch.
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")
WORLD_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")  # torchrun / accelerate; MPI
ALONE_TIMEOUT = timedelta(hours=6)  # how long the others wait at a barrier while main evaluates or runs the expert


def launched() -> bool:
    """Started by a launcher as one of several processes."""
    return any(int(os.environ.get(name, "1")) > 1 for name in WORLD_VARS)


def _dist() -> Any:
    """torch.distributed with the process group started (once), or None in a world of one."""
    if not launched():
        return None
    import torch

    if not torch.distributed.is_initialized():
        from accelerate import PartialState

        # on the CPU exactly when HF's TrainingArguments will be (grpo_args: use_cpu without a GPU; or the env flag)
        cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        PartialState(cpu=cpu, timeout=ALONE_TIMEOUT)  # sets the device; MPI ranks too
        atexit.register(_destroy)
    return torch.distributed


def _destroy() -> None:
    """Tear the process group down before the interpreter does (see the module docstring)."""
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def world_size() -> int:
    """How many processes train this run."""
    dist = _dist()
    return dist.get_world_size() if dist else 1


def rank() -> int:
    """This process's index; 0 is main."""
    dist = _dist()
    return dist.get_rank() if dist else 0


def is_main() -> bool:
    """Main writes the run directory's files (config, logs, evaluations, ledger, plots)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here."""
    dist = _dist()
    if dist:
        dist.barrier()


def broadcast(value: T) -> T:
    """Main's `value`, on every process."""
    dist = _dist()
    if not dist:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: T) -> list[T]:
    """Every process's `value` (pickled), in rank order, on every process."""
    dist = _dist()
    if not dist:
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def cpu_threads(configured: int | None) -> int | None:
    """Torch threads per process: as configured; under a launcher, the free cores split between this machine's processes."""
    if configured is not None or not launched():
        return configured
    from researchrl.policy.hf import default_threads

    return max(1, default_threads() // int(os.environ.get("LOCAL_WORLD_SIZE", world_size())))
