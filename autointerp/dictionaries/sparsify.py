"""EleutherAI sparsify folders (`cfg.json` + `sae.safetensors`) onto our Dictionary form.

sparsify (sparse_coder.py, 1.x) encodes x' = x - b_dec (x alone for transcoders) as
relu(encoder(x')), keeps the top k (or, for `groupmax`, the largest of each of k groups) and
decodes top_acts @ W_dec + b_dec (+ x @ W_skip.T with a skip connection). Multi-TopK is a
training loss only: inference is plain TopK. A checkpoint root holds one folder per
hookpoint, named after the Hugging Face module whose output was read (`layers.6`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.dictionaries.header import read_weights
from autointerp.errors import BadInputError
from autointerp.harvest.hook_names import split_hook, translate_hook

ACTIVATIONS = ("topk", "groupmax")
_MODULE = re.compile(r"(?:^|\.)(?:layers|h|embed_tokens|embed_in|wte)(?:\.|$)")
_BLOCK = re.compile(r"^(?:[\w.]*\.)?(?:layers|h)\.(\d+)$")
_MLP = re.compile(r"^(?:[\w.]*\.)?(?:layers|h)\.(\d+)\.mlp$")


def from_sparsify(cfg: dict, weights_path: Path, source: str | None = None) -> Dictionary:
    activation = cfg.get("activation", "topk")
    if activation not in ACTIVATIONS:
        raise BadInputError(f"{weights_path}: sparsify activation {activation!r} is not "
                            f"supported (supported: {', '.join(ACTIVATIONS)})")
    if not cfg.get("k"):
        raise BadInputError(f"{weights_path}: sparsify config has no k")
    t = read_weights(weights_path, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"))
    d_in = t["encoder.weight"].shape[1]
    if cfg.get("d_in") is not None and int(cfg["d_in"]) != d_in:
        raise BadInputError(f"{weights_path} has input width {d_in} but its cfg.json says "
                            f"d_in {cfg['d_in']}")
    transcode = bool(cfg.get("transcode"))
    skip = bool(cfg.get("skip_connection")) or "W_skip" in t
    hookpoint = weights_path.parent.name
    # sparsify names each folder after its hookpoint; a folder renamed to something that is
    # no module path declares no hook (score then asks for one) rather than a wrong one.
    module_path = _MODULE.search(hookpoint) is not None
    hook = _input_hook(hookpoint, transcode, weights_path) if module_path else None
    arch = "transcoder" if transcode else "topk"
    meta = {"method": "sparsify", "architecture": arch + ("+skip" if skip else "")
            + ("+groupmax" if activation == "groupmax" else ""),
            "model": cfg.get("model") or _root_model(weights_path.parent.parent), "hook": hook, "layer": split_hook(hook)[1] if hook else None,
            "hook_source_name": hookpoint if module_path else None,
            "source": source or f"sparsify folder {weights_path.parent}",
            "input_transform": None, "store": None, "store_model_hash": None,
            "hyperparameters": cfg}
    if transcode or skip:
        # The decoder (plus W_skip) predicts the module's output, not the SAE's input.
        meta["encode_only"] = True
    return Dictionary(t["encoder.weight"], t["encoder.bias"], t["W_dec"], t["b_dec"],
                      activation, int(cfg["k"]), None, meta, apply_b_dec_to_input=not transcode)


def _input_hook(hookpoint: str, transcode: bool, weights_path: Path) -> str:
    """Our name for what the sparse coder reads. An autoencoder reads the module's output
    (the hookpoint itself); a transcoder reads the module's input: for a whole block
    (`layers.L`) the block's input, our resid.(L-1) or embed; for its MLP (`layers.L.mlp`)
    what the MLP receives, after its norm, our mlp_in.L."""
    if not transcode:
        return translate_hook(hookpoint)
    m = _BLOCK.match(hookpoint)
    if m:
        layer = int(m.group(1))
        return "embed" if layer == 0 else f"resid.{layer - 1}"
    m = _MLP.match(hookpoint)
    if m:
        return f"mlp_in.{m.group(1)}"
    raise BadInputError(f"{weights_path}: sparsify transcoder at '{hookpoint}' reads that "
                        "module's input, which has no equivalent among our hook points")


def _root_model(root: Path) -> str | None:
    """The model name sparsify's trainer writes into the checkpoint root's config.json."""
    try:
        return json.loads((root / "config.json").read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        return None
