"""What can be known of a dictionary without its weights, and without importing torch:
the format's file names and version, the header of our own format (config.json alone),
and the checks of a dictionary's provenance against an activation store. A rerun whose
fragments are already in the database needs nothing more (`score` then never imports
torch). With the folder layouts and the file readers it is the leaf of dictionaries/:
the readers, the Hub fetcher and the dispatcher (sources.py) import it, never the
other way round."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autointerp.errors import BadInputError

if TYPE_CHECKING:
    import torch

    from autointerp.dictionaries.dictionary import Dictionary

FORMAT_VERSION = 2
"""2 added gated / groupmax activations, input normalisation and apply_b_dec_to_input;
a version-1 file is written whenever none of them is used, so older readers still read it."""
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "dictionary.safetensors"


@dataclass(frozen=True)
class Header:
    """A dictionary's shape and metadata, as its config declares them (the weights, read
    when they are needed, are checked against it then)."""

    d_model: int
    n_features: int
    meta: dict


# Other names of the same subject model, as TransformerLens and sae-lens configs write them
# (after the organisation prefix is dropped and the name lower-cased).
MODEL_ALIASES = {"gpt2-small": "gpt2", "smollm2-135m-instruct": "smollm2-135m"}


def canonical_model(name: str | None) -> str | None:
    """`EleutherAI/pythia-70m` and `pythia-70m` are one model, `gpt2-small` is `gpt2`; a local
    folder is known by its last path component."""
    if not name:
        return None
    base = str(name).rstrip("/").rsplit("/", 1)[-1].lower()
    return MODEL_ALIASES.get(base, base)


def declared_hook(meta: dict) -> str | None:
    """The dictionary's hook point in our vocabulary (readers translate at load; names written
    by older readers are translated here), None when it declares none."""
    from autointerp.harvest.hook_names import translate_hook

    return translate_hook(meta["hook"]) if meta.get("hook") not in (None, "") else None


def _mismatches(meta: dict, smeta: dict, store_path) -> list[str]:
    out = []
    ours, theirs = meta.get("store_model_hash"), smeta.get("model_hash")
    if ours and theirs:  # both ours: the weights hash decides, whatever the names
        if ours != theirs:
            out.append(f"dictionary was fit on activations of model {meta.get('model')} (weights "
                       f"hash {ours[:12]}) but {store_path} holds model {smeta.get('model')} "
                       f"(hash {theirs[:12]})")
    elif meta.get("model") and smeta.get("model") and \
            canonical_model(meta["model"]) != canonical_model(smeta["model"]):
        out.append(f"dictionary was fit on activations of model {meta['model']} but {store_path} "
                   f"holds model {smeta['model']}")
    try:
        hook = declared_hook(meta)
    except BadInputError as e:  # a hook we cannot harvest: no store can match it
        out.append(f"dictionary's {e}")
        hook = None
    store_hook = smeta.get("hook")
    if hook and store_hook and hook != store_hook:
        raw = meta.get("hook_source_name") or meta["hook"]
        source = f" ({raw})" if raw != hook else ""
        out.append(f"dictionary was fit at hook {hook}{source} but {store_path} holds activations "
                   f"from hook {store_hook}")
    transform, store_transform = meta.get("input_transform"), smeta.get("input_transform")
    if transform == "center" and smeta.get("center_is_noop"):
        transform = None  # an RMSNorm model: TransformerLens does not centre it either
    if transform != store_transform:
        out.append(f"dictionary expects input transform {transform or 'none'} but {store_path} "
                   f"was harvested with {store_transform or 'none'}")
    return out


def check_compatible(dictionary: Dictionary | Header, store, force: bool = False) -> list[str]:
    """Raise BadInputError when `dictionary` was not made for the activations in `store`: another
    width (always), or another model, hook point or input transform than it declares (unless
    `force`). Returns the mismatches that `force` let through, for the run's record."""
    if dictionary.d_model != store.d_model:
        raise BadInputError(f"dictionary width {dictionary.d_model} does not match the "
                            f"activations' d_model {store.d_model}")
    found = _mismatches(dictionary.meta, store.meta, store.path)
    if found and not force:
        raise BadInputError("; ".join(found) + " (pass --force to score it anyway)")
    return found


# Layouts a dictionary folder can have: (config file or None, weights file, reader name).
LAYOUTS = (
    (CONFIG_NAME, WEIGHTS_NAME, "autointerp"),
    ("cfg.json", "sae_weights.safetensors", "saelens"),
    ("cfg.json", "sae.safetensors", "sparsify"),
    (None, "params.npz", "gemmascope"),
    (CONFIG_NAME, "ae.pt", "dictionary_learning"),
)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise BadInputError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise BadInputError(f"{path} is not valid JSON: {e}") from None


def read_weights(path: Path, required: tuple[str, ...]) -> dict[str, torch.Tensor]:
    import torch
    from safetensors.torch import load_file

    if not path.exists():
        raise BadInputError(f"dictionary weights {path} are missing")
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                tensors = {name: torch.from_numpy(np.array(z[name])) for name in z.files}
        else:
            tensors = load_file(str(path))
    except Exception as e:  # safetensors and numpy raise their own error types on truncation
        raise BadInputError(f"dictionary weights {path} are truncated or corrupt "
                            f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    missing = [name for name in required if name not in tensors]
    if missing:
        raise BadInputError(f"dictionary weights {path} lack tensor(s) {', '.join(missing)}")
    return tensors


# Cross-layer transcoders (clt.py): a root with config.yaml and one encoder file per layer.
CLT_CONFIG = "config.yaml"


CLT_ENCODER = re.compile(r"^W_enc_(\d+)\.safetensors$")


def is_clt_layer_file(path: Path) -> bool:
    return path.is_file() and bool(CLT_ENCODER.match(path.name)) and (path.parent / CLT_CONFIG).exists()


def clt_layer_files(root: Path) -> list[Path]:
    """The per-layer encoder files of a CLT root, in layer order ([] for anything else)."""
    if not (root.is_dir() and (root / CLT_CONFIG).exists()):
        return []
    found = [p for p in root.iterdir() if CLT_ENCODER.match(p.name)]
    return sorted(found, key=lambda p: int(CLT_ENCODER.match(p.name).group(1)))
