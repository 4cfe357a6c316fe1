"""``torch.distributed`` plumbing shared by distributed training and sharded detection.

The launcher is ``torchrun`` (one node: ``torchrun --standalone --nproc-per-node N -m gsmt_fast.cli ...``; several
nodes: its c10d rendezvous). torchrun describes each worker through environment variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); :func:`torchrun_env` reads them and
:func:`init_from_env` joins the process group they describe. Without them the process is the only rank
(``WorldInfo(rank=0, world_size=1)``) and nothing is initialised.

Backend choice: NCCL for CUDA tensors, Gloo otherwise. Work that only exchanges a few small Python objects (the
sharded detection's plan and its final barrier) always uses Gloo, whatever the device, so that it never needs a GPU
per rank nor a current CUDA device.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch

_ENV_INTS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class WorldInfo:
    """Where this process stands: its rank among ``world_size`` processes and its rank on its node.

    ``distributed`` is True when a process group is in use (torchrun, or a group the caller initialised);
    ``owns_group`` when this module created it (and :func:`shutdown` destroys it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    distributed: bool = False
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from the torchrun environment, or None when not launched that way.

    Raises a ValueError naming the variable when the environment is set but inconsistent (a partial or
    hand-written launch)."""
    present = [name for name in _ENV_INTS if os.environ.get(name) not in (None, "")]
    if not present:
        return None
    values = {}
    for name in ("RANK", "WORLD_SIZE"):
        raw = os.environ.get(name)
        if raw in (None, ""):
            raise ValueError(f"{', '.join(present)} set but {name} is not: launch with torchrun (or set RANK, "
                             "WORLD_SIZE, MASTER_ADDR and MASTER_PORT together)")
        try:
            values[name] = int(raw)
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    rank, world = values["RANK"], values["WORLD_SIZE"]
    local_raw = os.environ.get("LOCAL_RANK") or "0"
    try:
        local = int(local_raw)
    except ValueError:
        raise ValueError(f"environment variable LOCAL_RANK={local_raw!r} is not an integer") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world}: need WORLD_SIZE >= 1 and 0 <= RANK < WORLD_SIZE")
    if local < 0:
        raise ValueError(f"LOCAL_RANK={local} must be >= 0")
    return rank, world, local


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables are present (even for a single process)."""
    return torchrun_env() is not None


def choose_backend(device: str | torch.device | None) -> str:
    """``"nccl"`` for a CUDA device (when this torch build has NCCL), ``"gloo"`` otherwise."""
    if device is not None and torch.device(device).type == "cuda":
        if not torch.distributed.is_nccl_available():
            raise RuntimeError("distributed training on CUDA needs NCCL, which this torch build lacks")
        return "nccl"
    return "gloo"


def current_world() -> WorldInfo:
    """The world of an already initialised default process group (rank 0 of 1 when there is none)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        env = torchrun_env()
        return WorldInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=env[2] if env else 0,
                         backend=str(dist.get_backend()), distributed=True, owns_group=False)
    return WorldInfo()


def init_from_env(device: str | torch.device | None = None, backend: str | None = None,
                  timeout_s: float | None = None) -> WorldInfo:
    """Join the process group torchrun describes (see the module docstring); a no-op outside torchrun.

    A default group that the caller already initialised is reused as is. ``backend`` defaults to
    :func:`choose_backend` of ``device``; on NCCL the process's CUDA device becomes ``cuda:LOCAL_RANK``.
    ``timeout_s`` bounds every collective (torch's default when None)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return current_world()
    env = torchrun_env()
    if env is None:
        return WorldInfo()
    rank, world, local = env
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run without torchrun")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise ValueError(f"RANK/WORLD_SIZE are set but {' and '.join(missing)} not: launch with torchrun")
    backend = backend or choose_backend(device)
    if backend == "nccl":
        torch.cuda.set_device(local)
    kwargs: dict[str, Any] = {"backend": backend, "rank": rank, "world_size": world}
    if timeout_s is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=float(timeout_s))
    dist.init_process_group(**kwargs)
    return WorldInfo(rank=rank, world_size=world, local_rank=local, backend=backend, distributed=True,
                     owns_group=True)


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Each rank's share of a global batch; an error naming the fix when the batch does not split evenly."""
    if global_batch < 1:
        raise ValueError(f"train.batch_size must be >= 1, got {global_batch}")
    if global_batch % world_size:
        raise ValueError(f"train.batch_size={global_batch} is the global batch, split evenly over the {world_size} "
                         f"ranks: choose a batch size divisible by {world_size} (or a number of ranks dividing "
                         f"{global_batch})")
    return global_batch // world_size


def shutdown(world: WorldInfo) -> None:
    """Destroy the process group if :func:`init_from_env` created it."""
    if world.owns_group and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(world: WorldInfo) -> None:
    if world.distributed:
        torch.distributed.barrier()


def broadcast_object(world: WorldInfo, obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; for small control data only)."""
    if not world.distributed:
        return obj
    box = [obj if world.rank == src else None]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(world: WorldInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj``, indexed by rank, on every rank."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def all_reduce_sum(world: WorldInfo, tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over ranks, in place (and returned)."""
    if world.distributed:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


__all__ = ["WorldInfo", "torchrun_env", "launched_by_torchrun", "choose_backend", "current_world", "init_from_env",
           "per_rank_batch", "shutdown", "barrier", "broadcast_object", "gather_objects", "all_reduce_sum"]
