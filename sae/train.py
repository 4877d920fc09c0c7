"""The SAE trainer: Adam over batches of activations, resumable from checkpoints.

`train_sae` accepts any iterable of (batch, d_model) float tensors, so the toy tests
feed it synthetic batches and the CLI feeds it `ActivationStore.train_batches`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.distributed import SINGLE, World
from autointerp.errors import BadInputError
from autointerp.progress import Progress
from autointerp.sae.config import TrainConfig
from autointerp.sae.modules import SparseAutoencoder

CHECKPOINT_NAME = "checkpoint.pt"
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


def save_checkpoint(trainer: Trainer, path: Path, identity: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({**trainer.state_dict(), "identity": identity}, tmp)
    os.replace(tmp, path)


def resume(trainer: Trainer, path: Path | None, identity: dict) -> bool:
    """Load `path` into `trainer` when it holds a checkpoint of the same run."""
    if path is None or not path.exists():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn or foreign file: say which, never train over it silently
        raise BadInputError(f"checkpoint {path} is unreadable ({type(e).__name__}); "
                            "delete it to start over") from None
    if state.get("config") != asdict(trainer.config) or state.get("identity") != identity:
        raise BadInputError(f"checkpoint {path} is from a run with other settings; "
                            "use another --out or --overwrite")
    trainer.load_state_dict(state)
    return True


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


def make_trainer(d_model: int, config: TrainConfig, device: str = "auto",
                 world: World = SINGLE) -> Trainer:
    """The single-process Trainer, or in a world of several processes a DDP replica that
    trains on its rank's slice of every global batch (sae/ddp.py)."""
    if not world.distributed:
        return Trainer(d_model, config, device)
    from autointerp.sae.ddp import DistributedTrainer
    return DistributedTrainer(d_model, config, device, world)


def train_sae(batches: Iterable[torch.Tensor], d_model: int, config: TrainConfig,
              checkpoint: Path | None = None, meta: dict | None = None, device: str = "auto",
              progress: bool = True, world: World = SINGLE) -> tuple[Dictionary, dict[str, float]]:
    """Train one SAE; return it (in original units) and the final training statistics.

    With `checkpoint`, the run resumes from it when present (skipping the batches it
    already consumed, so the data order matches an uninterrupted run) and saves to it
    every `checkpoint_every` steps and at the end. `meta` (the data's provenance) is
    part of the run's identity: a checkpoint made on other data is never resumed.

    In a world of several processes every rank passes the same global batches; each trains a
    DDP replica on its slice of them and rank 0 alone writes the checkpoint."""
    meta = meta or {}
    trainer = make_trainer(d_model, config, device, world)
    summary = fit(trainer, batches, checkpoint, meta, progress)
    return trainer.to_dictionary(meta), summary


def fit(trainer: Trainer, batches: Iterable[torch.Tensor], checkpoint: Path | None = None,
        meta: dict | None = None, progress: bool = True) -> dict[str, float]:
    """Run `trainer` to config.n_steps (see train_sae); return the last statistics."""
    config, meta = trainer.config, meta or {}
    resumed = resume(trainer, checkpoint, meta)
    it = iter(batches)
    for _ in range(trainer.step_index):
        next(it, None)
    summary = {}
    with _progress(progress and trainer.writes_files) as bar:
        task = bar.add_task("train", total=config.n_steps, completed=trainer.step_index, stats="")
        while trainer.step_index < config.n_steps:
            x = next(it, None)
            if x is None:
                raise BadInputError(f"the activations ran out after {trainer.step_index} of "
                                    f"{config.n_steps} steps")
            _check_batch(x, trainer.sae.b_dec.shape[0], trainer.step_index)
            if trainer.step_index == 0 and not resumed:
                trainer.init_from(x)
            trainer.step(x)
            done = trainer.step_index
            if done % LOG_EVERY == 0 or done == config.n_steps:
                summary = trainer.summary()
                bar.update(task, stats="mse {mse:.4g} fvu {fvu:.3f} L0 {l0:.1f} dead {dead:.1%}"
                           .format(**summary))
            bar.update(task, completed=done)
            if checkpoint is not None and trainer.writes_files and (
                    done % config.checkpoint_every == 0 or done == config.n_steps):
                save_checkpoint(trainer, checkpoint, meta)
    return summary


def _check_batch(x: torch.Tensor, d_model: int, step: int) -> None:
    if x.ndim != 2 or x.shape[1] != d_model:
        raise BadInputError(f"training batch {step} has shape {tuple(x.shape)}, expected (n, {d_model})")
    if not torch.isfinite(x).all():
        raise BadInputError(f"training batch {step} has NaN or inf activations")
