"""One SAE, its optimiser and its running statistics: the single-process Trainer that
train.py drives and ddp.py wraps."""

from __future__ import annotations

from dataclasses import asdict

import torch

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.errors import BadInputError
from autointerp.sae.config import TrainConfig
from autointerp.sae.modules import SparseAutoencoder

LOG_EVERY = 20  # steps between progress-bar statistics (each read forces a device sync)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise BadInputError(f"unknown --device {device!r}; use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError("--device cuda was asked for but no CUDA GPU is available")
    return torch.device(device)


class Trainer:
    """One SAE, its optimiser and its running statistics."""

    def __init__(self, d_model: int, config: TrainConfig, device: str = "auto"):
        self.config, self.device = config, pick_device(device)
        gen = torch.Generator().manual_seed(config.seed)
        self.sae = SparseAutoencoder(config.arch, d_model, config.n_features, config.topk, gen)
        self.sae.to(self.device)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=config.learning_rate,
                                    betas=(0.9, 0.999))
        self.step_index = 0
        self.scale = 1.0  # activations are divided by this so that E||x - mean||^2 = 1
        self.since_fired = torch.zeros(config.n_features, dtype=torch.long, device=self.device)
        self.stats = torch.zeros(4, device=self.device)  # sums of mse, fvu, l0 over LOG_EVERY steps

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Set the input scale and b_dec (the data mean) from a first batch."""
        x = x.to(self.device, torch.float32)
        mean = x.mean(0)
        self.scale = float((x - mean).pow(2).sum(1).mean().sqrt().clamp(min=1e-8))
        self.sae.b_dec.copy_(mean / self.scale)

    writes_files = True
    """Whether this process writes checkpoints and shows progress (in DDP: rank 0 only)."""
    aux_weight = 1.0
    """Factor on the AuxK loss; DDP sets it so that averaged gradients equal one process's."""

    def step(self, x: torch.Tensor) -> None:
        cfg = self.config
        lr, l1 = cfg.schedule(self.step_index)
        for group in self.opt.param_groups:
            group["lr"] = lr
        x = x.to(self.device, torch.float32, non_blocking=True) / self.scale  # (batch, d_model)
        var_sum = self._variance_sum(x)
        with torch.autocast("cuda", torch.bfloat16, enabled=self.device.type == "cuda"):
            x_hat, f, pre = self._forward(x)
        x_hat, f = x_hat.float(), f.float()
        sse = (x_hat - x).pow(2).sum(1).mean()  # sum of squares: ~FVU in these units
        if cfg.arch == "topk":
            dead = self.since_fired >= cfg.dead_after
            aux = self.sae.aux_loss(x, x_hat, pre.float(), dead, var_sum)
            loss = sse + cfg.aux_coef * self.aux_weight * aux
        else:
            loss = sse + l1 * f.sum(1).mean()  # f >= 0, so this is the L1 norm
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.sae.remove_parallel_grads_()
        self.opt.step()
        self.sae.unit_norm_()
        self._track(x, sse.detach(), f.detach(), var_sum)
        self.step_index += 1

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.sae(x)

    @torch.no_grad()
    def _variance_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over the batch of ||x - batch mean||^2."""
        return (x - x.mean(0)).pow(2).sum()

    @torch.no_grad()
    def _track(self, x: torch.Tensor, sse: torch.Tensor, f: torch.Tensor, var_sum: torch.Tensor) -> None:
        active = f > 0
        self.since_fired += len(x)
        self.since_fired[active.any(0)] = 0
        l0 = torch.count_nonzero(active) / len(x)  # a per-row sum would copy (batch, n_features)
        self.stats += torch.stack([sse / x.shape[1], sse / (var_sum / len(x)), l0.float(),
                                   torch.ones((), device=self.device)])

    def summary(self) -> dict[str, float]:
        """Mean MSE (original units), FVU, L0 since the last call, and the dead fraction."""
        mse, fvu, l0, n = self.stats.tolist()
        self.stats.zero_()
        n = max(n, 1.0)
        dead = (self.since_fired >= self.config.dead_after).float().mean().item()
        return {"mse": mse / n * self.scale**2, "fvu": fvu / n, "l0": l0 / n, "dead": dead}

    def state_dict(self) -> dict:
        return {"config": asdict(self.config), "step": self.step_index, "scale": self.scale,
                "sae": self.sae.state_dict(), "opt": self.opt.state_dict(),
                "since_fired": self.since_fired.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.sae.load_state_dict(state["sae"])
        self.opt.load_state_dict(state["opt"])
        self.step_index, self.scale = state["step"], state["scale"]
        self.since_fired = state["since_fired"].to(self.device)

    def training_record(self) -> dict:
        """How it was trained (not part of the dictionary's identity: a rerun on another
        number of processes computes the same thing)."""
        return {"world_size": 1, "device": self.device.type}

    def to_dictionary(self, meta: dict) -> Dictionary:
        meta = {**meta, "method": self.config.arch, "input_scale": self.scale,
                "hyperparameters": self.config.hyperparameters(), "training": self.training_record()}
        return self.sae.to_dictionary(self.scale, meta)


def check_batch(x: torch.Tensor, d_model: int, step: int) -> None:
    if x.ndim != 2 or x.shape[1] != d_model:
        raise BadInputError(f"training batch {step} has shape {tuple(x.shape)}, expected (n, {d_model})")
    if not torch.isfinite(x).all():
        raise BadInputError(f"training batch {step} has NaN or inf activations")
