"""Train an SAE on an activation store into a dictionary folder, evaluated on held-out data."""

from __future__ import annotations

from pathlib import Path

from autointerp.dictionaries.dictionary import Dictionary, meta_from_store, prepare_out
from autointerp.dictionaries.evaluate import evaluate
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
                     progress: bool = True) -> tuple[Dictionary, bool]:
    """(dictionary, reused): reused is True when `out` already held this exact run.
    A checkpoint in `out` from an interrupted run of the same settings is resumed."""
    out = Path(out)
    meta = {**meta_from_store(store), "method": config.arch,
            "hyperparameters": config.hyperparameters()}
    done = prepare_out(out, meta, overwrite)
    if done is not None:
        return done, True
    provenance = meta_from_store(store)
    batches = store.train_batches(config.batch_size, config.n_tokens, seed=config.seed)
    dictionary, _ = train_sae(batches, store.d_model, config, out / CHECKPOINT_NAME,
                              provenance, device, progress)
    return save_evaluated(dictionary, store, out), False
