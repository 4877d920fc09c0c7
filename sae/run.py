"""Train an SAE on an activation store into a dictionary folder, evaluated on held-out data."""

from __future__ import annotations

from pathlib import Path

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.dictionaries.evaluate import evaluate
from autointerp.dictionaries.outputs import meta_from_store, prepare_out
from autointerp.dictionaries.sources import load_dictionary
from autointerp.distributed import SINGLE, World, current_world
from autointerp.errors import BadInputError
from autointerp.harvest.store import ActivationStore
from autointerp.sae.config import TrainConfig
from autointerp.sae.train import CHECKPOINT_NAME, train_sae


def save_evaluated(dictionary: Dictionary, store: ActivationStore, out: Path) -> Dictionary:
    """Measure the reconstruction metrics on the store's eval part, record them in the
    dictionary's config.json (results tables read them there) and save."""
    dictionary.meta["metrics"] = evaluate(dictionary, store).as_dict()
    dictionary.save(out)
    return dictionary


def train_from_store(store: ActivationStore, out: str | Path, config: TrainConfig,
                     device: str = "auto", overwrite: bool = False,
                     progress: bool = True, world: World | None = None) -> tuple[Dictionary, bool]:
    """(dictionary, reused): reused is True when `out` already held this exact run.
    A checkpoint in `out` from an interrupted run of the same settings is resumed.

    Under torchrun every rank calls this with the same arguments: rank 0 prepares `out`,
    all ranks train (sae/ddp.py), rank 0 evaluates and saves, and every rank returns the
    saved dictionary. `world=SINGLE` trains in this process alone, whatever torchrun says."""
    out = Path(out)
    world = current_world() if world is None else world
    meta = {**meta_from_store(store), "method": config.arch,
            "hyperparameters": config.hyperparameters()}
    reused = world.broadcast(_prepared(out, meta, overwrite) if world.is_main else None)
    if isinstance(reused, str):
        raise BadInputError(reused)
    if reused:
        return load_dictionary(out), True
    world.barrier()  # `out` is ready (an old checkpoint removed by --overwrite) before any rank reads it
    provenance = meta_from_store(store)
    batches = store.train_batches(config.batch_size, config.n_tokens, seed=config.seed)
    dictionary, _ = train_sae(batches, store.d_model, config, out / CHECKPOINT_NAME,
                              provenance, device, progress, world)
    if world.is_main:
        save_evaluated(dictionary, store, out)
    world.barrier()
    return (dictionary if world.is_main else load_dictionary(out)), False


def _prepared(out: Path, meta: dict, overwrite: bool) -> bool | str:
    """Whether `out` already holds this dictionary, or the one-line error why it cannot be used."""
    try:
        return prepare_out(out, meta, overwrite) is not None
    except BadInputError as e:
        return str(e)


def train_spread(jobs: list[tuple[ActivationStore, Path, TrainConfig]], device: str = "auto",
                 overwrite: bool = False, progress: bool = True) -> list[tuple[Dictionary, bool]]:
    """One SAE per store (e.g. one per hook point), spread over the ranks: job i is trained
    by rank i mod world_size, alone, so N ranks train N SAEs at once with no communication.
    Every rank returns every result. A job's user error is raised on every rank."""
    world = current_world()
    done: dict[int, bool] = {}
    error = None
    for i in range(world.rank, len(jobs), world.world_size):
        store, out, config = jobs[i]
        try:
            done[i] = train_from_store(store, out, config, world.device(device), overwrite,
                                       progress, world=SINGLE)[1]
        except BadInputError as e:
            error = f"{out}: {e}"
            break
    # Unconditional, so that no rank waits in a collective that another rank skipped.
    reports = world.gather(error if error is not None else done)
    failed = [r for r in reports if isinstance(r, str)]
    if failed:
        raise BadInputError(failed[0])
    reused = {i: flag for r in reports for i, flag in r.items()}
    return [(load_dictionary(out), reused[i]) for i, (_, out, _) in enumerate(jobs)]
