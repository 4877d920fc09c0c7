"""Where a dictionary we make goes: the provenance it records from its activation store,
and its output folder (a rerun made the same way reuses what is there)."""

from __future__ import annotations

from pathlib import Path

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.dictionaries.header import CONFIG_NAME, WEIGHTS_NAME
from autointerp.dictionaries.sources import load_dictionary
from autointerp.errors import BadInputError
from autointerp.harvest.store import remove_stale_temp_files


def meta_from_store(store) -> dict:
    """The provenance every dictionary fit on `store` records."""
    m = store.meta
    return {"model": m.get("model"), "hook": m.get("hook"), "layer": m.get("layer"),
            "input_transform": m.get("input_transform"),
            "store": str(Path(store.path).resolve()), "store_model_hash": m.get("model_hash")}


IDENTITY_KEYS = ("method", "store", "store_model_hash", "hyperparameters")


OUR_FILES = (CONFIG_NAME, WEIGHTS_NAME, "checkpoint.pt")


def prepare_out(out: str | Path, meta: dict, overwrite: bool) -> Dictionary | None:
    """Make `out` ready for a new dictionary with `meta`. Return the finished one already
    there when it was made the same way (a rerun costs nothing); with `overwrite`, delete
    our files from `out` first; otherwise refuse to replace a different dictionary.
    Temporary files a killed run left in `out` are deleted."""
    out = Path(out)
    remove_stale_temp_files(out)
    if overwrite:
        for name in OUR_FILES:
            (out / name).unlink(missing_ok=True)
        return None
    if not (out / CONFIG_NAME).exists():
        return None
    old = load_dictionary(out)
    same = all(old.meta.get(key) == meta.get(key) for key in IDENTITY_KEYS)
    if not same:
        raise BadInputError(f"{out} already holds a dictionary made with other settings; "
                            "use another --out or --overwrite")
    return old
