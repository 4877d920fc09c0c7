"""Data-parallel SAE training: the single-process Trainer, with each rank holding a DDP replica
and a contiguous slice of every global batch (`--batch-size` stays the global batch).

What makes N ranks train the same SAE as one process on the global batch:
- the loss is a mean over each rank's rows and DDP averages gradients, so with equal slices
  the gradient is the global batch's; AuxK divides by the global batch's variance and is
  weighted by N, since it is a sum over rows rather than a mean;
- everything else computed from data is reduced over all ranks: the input scale and decoder
  bias (first batch), the batch variance, which latents fired (dead-latent counters, hence
  the AuxK mask) and the logged MSE, FVU and L0;
- every collective runs on every rank at every step: none sits in a branch that one rank's
  data decides (the AuxK branch depends on the dead-latent counters, equal on all ranks);
- after the averaged gradient every rank applies the same Adam step and the same decoder
  unit-norm projection, so the replicas stay equal without another broadcast.
The layout follows EleutherAI sparsify's trainer (DDP around the SAE, all-reduced statistics).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from autointerp.distributed import World
from autointerp.errors import BadInputError
from autointerp.sae.config import TrainConfig
from autointerp.sae.trainer import Trainer


class DistributedTrainer(Trainer):
    """A Trainer whose `init_from` and `step` take the global batch and use this rank's slice."""

    def __init__(self, d_model: int, config: TrainConfig, device: str, world: World):
        if config.batch_size % world.world_size:
            raise BadInputError(f"--batch-size {config.batch_size} must be a multiple of the "
                                f"{world.world_size} processes, so that every rank gets an equal slice")
        super().__init__(d_model, config, world.device(device))
        self.world = world
        self.writes_files = world.is_main
        self.aux_weight = float(world.world_size)
        self.local_size = config.batch_size // world.world_size
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(self.sae, device_ids=ids)

    def _slice(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) != self.config.batch_size:
            raise BadInputError(f"a global batch of {len(x)} rows, expected {self.config.batch_size}")
        start = self.world.rank * self.local_size
        return x[start:start + self.local_size]

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t)
        return t

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Scale and b_dec from the global first batch, each rank contributing its slice."""
        x = self._slice(x).to(self.device, torch.float32)
        mean = self._all_reduce(x.sum(0)) / self.config.batch_size
        var = self._all_reduce((x - mean).pow(2).sum()) / self.config.batch_size
        self.scale = float(var.sqrt().clamp(min=1e-8))
        self.sae.b_dec.copy_(mean / self.scale)

    def step(self, x: torch.Tensor) -> None:
        super().step(self._slice(x))

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.ddp(x)  # DDP's backward hooks average the gradients over the ranks

    @torch.no_grad()
    def _variance_sum(self, x: torch.Tensor) -> torch.Tensor:
        mean = self._all_reduce(x.sum(0)) / self.config.batch_size
        return self._all_reduce((x - mean).pow(2).sum())

    @torch.no_grad()
    def _track(self, x: torch.Tensor, sse: torch.Tensor, f: torch.Tensor, var_sum: torch.Tensor) -> None:
        active = f > 0
        # One all-reduce: how many ranks saw each latent fire, the squared error and the
        # non-zero count, summed over ranks.
        sums = torch.cat([active.any(0).float(), (sse * len(x)).reshape(1),
                          torch.count_nonzero(active).float().reshape(1)])
        self._all_reduce(sums)
        n = self.config.batch_size
        fired, sse_total, nonzero = sums[:-2] > 0, sums[-2], sums[-1]
        self.since_fired += n
        self.since_fired[fired] = 0
        self.stats += torch.stack([sse_total / n / x.shape[1], sse_total / var_sum, nonzero / n,
                                   torch.ones((), device=self.device)])

    def training_record(self) -> dict:
        return {"world_size": self.world.world_size, "backend": self.world.backend,
                "device": self.device.type}
