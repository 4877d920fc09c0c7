"""Past one process: the `torch.distributed` world a command runs in.

`torchrun --nproc_per_node N -m autointerp ...` (`python -m torch.distributed.run`) starts N
copies of the command with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in the
environment; `current_world()` joins the process group they describe (gloo on CPU, nccl on
CUDA). Without those variables, or with WORLD_SIZE 1, it is a world of one and no collective
is ever called, so the single-process path has no distributed code in it.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from autointerp.errors import BadInputError


@dataclass(frozen=True)
class World:
    rank: int
    """This process's index, 0..world_size-1 (rank 0 writes the shared files)."""
    world_size: int
    local_rank: int
    """Index on this machine: which GPU the process uses."""
    backend: str | None
    """gloo | nccl, or None for a world of one."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self, device: str) -> str:
        """The device this rank computes on: each CUDA rank gets its own GPU."""
        wants_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if not self.distributed or not wants_cuda or ":" in device:
            return device
        torch.cuda.set_device(self.local_rank)
        return f"cuda:{self.local_rank}"

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank (a world of one: [obj])."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's `obj`, on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


SINGLE = World(0, 1, 0, None)
WAIT_LIMIT = timedelta(hours=24)
"""How long a collective may wait for the other ranks. A rank that finishes its share of a
harvest (or resumes with nothing left) waits at the final gather for the slowest one, which
can take hours; torch's default (10-30 minutes) would kill it. A rank that dies is not
waited for: torchrun stops the other ranks when one exits with an error."""


def current_world() -> World:
    """The world this process belongs to, joining torchrun's process group when needed."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(),
                     int(os.environ.get("LOCAL_RANK", dist.get_rank())), dist.get_backend())
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise BadInputError("RANK, WORLD_SIZE and LOCAL_RANK must be integers; "
                            "start several processes with torchrun") from None
    if world_size <= 1:
        return SINGLE
    if not dist.is_available():
        raise BadInputError("this torch build has no torch.distributed; run one process")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=WAIT_LIMIT)
    atexit.register(_leave)  # torch asks for it; nccl warns at exit otherwise
    return World(rank, world_size, local_rank, backend)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block before the others (e.g. a first model load that fills a cache,
    or replacing an output folder), so they never race on the same files."""
    if not world.is_main:
        world.barrier()
    yield
    if world.is_main:
        world.barrier()
