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
from autointerp.harvest.store import publish
from autointerp.progress import Progress
from autointerp.sae.config import TrainConfig
from autointerp.sae.trainer import LOG_EVERY, Trainer, check_batch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(trainer: Trainer, path: Path, identity: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({**trainer.state_dict(), "identity": identity}, tmp)
    publish(tmp, path)


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
            check_batch(x, trainer.sae.b_dec.shape[0], trainer.step_index)
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
