"""Run a function on N processes that form a torch.distributed world (gloo on CPU, a free
local port, one thread each), as torchrun would (not a test module)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.support.servers.base import free_port


def spawn(fn, *args, world_size: int = 2) -> None:
    """Call fn(*args) on `world_size` fresh processes with torchrun's environment variables;
    fn must be a module-level function. Raises if any rank raises."""
    mp.spawn(_entry, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True)


def _entry(rank: int, world_size: int, port: int, fn, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1",
                      TOKENIZERS_PARALLELISM="false")
    torch.set_num_threads(1)
    try:
        fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
