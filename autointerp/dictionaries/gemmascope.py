"""Gemma Scope `params.npz` (Lieberum et al. 2024) onto our Dictionary form.

The file holds W_enc (d_model, d_sae), W_dec (d_sae, d_model), b_enc, b_dec and threshold;
the published JumpReLU encoder does not subtract b_dec:

    pre = x @ W_enc + b_enc;   f = (pre > threshold) * relu(pre);   x_hat = f @ W_dec + b_dec

The file says nothing about where it was trained; the Hub path does
(`google/gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71/params.npz`): residual SAEs
read the output of block L, our resid.L. Without such a path the hook is left undeclared.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.dictionaries.header import read_weights
from autointerp.errors import BadInputError

_REPO = re.compile(r"gemma-scope-(\d+b)-(pt|it)-(res|mlp|att|transcoders)\w*")
_LAYER = re.compile(r"(?:^|/)layer_(\d+)(?:/|$)")
MODELS = {("2b", "pt"): "google/gemma-2-2b", ("9b", "pt"): "google/gemma-2-9b",
          ("9b", "it"): "google/gemma-2-9b-it", ("27b", "pt"): "google/gemma-2-27b"}


def from_gemmascope(weights_path: Path, source: str | None = None) -> Dictionary:
    t = read_weights(weights_path, ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"))
    model, hook, raw = _where(weights_path)
    meta = {"method": "gemmascope", "architecture": "jumprelu", "model": model, "hook": hook,
            "layer": int(hook.split(".")[1]) if hook else None, "hook_source_name": raw,
            "source": source or f"gemma-scope npz {weights_path}", "input_transform": None,
            "store": None, "store_model_hash": None, "hyperparameters": {}}
    W_enc = t["W_enc"].float().T  # (d_sae, d_model)
    return Dictionary(W_enc, t["b_enc"], t["W_dec"], t["b_dec"], "jumprelu", None,
                      t["threshold"], meta, apply_b_dec_to_input=False)


def _where(weights_path: Path) -> tuple[str | None, str | None, str | None]:
    """(model, our hook, the path's own words for it) from a Gemma Scope Hub path."""
    text = Path(os.path.abspath(weights_path)).as_posix()  # not resolve(): Hub cache files are symlinks
    repo, layer = _REPO.search(text), _LAYER.search(text)
    if repo and re.search(r"(?:^|/)embedding(?:/|$)", text[repo.end():]):
        # Trained on embed_tokens' output before Gemma multiplies it by sqrt(d_model) (sae-lens
        # divides W_enc by that factor to read TransformerLens's scaled hook_embed): our `embed`,
        # block 0's input, is the scaled one, so declaring nothing would invite a wrong --hook.
        raise BadInputError(f"{weights_path}: Gemma Scope embedding SAEs read the token "
                            "embedding before Gemma's sqrt(d_model) scaling, which has no "
                            "equivalent among our hook points")
    if not repo or not layer:
        return None, None, None
    raw = f"{repo.group(0)}/layer_{layer.group(1)}"
    if repo.group(3) != "res":
        # MLP and attention SAEs read Gemma 2's normalised MLP output and the attention's
        # per-head z; transcoders read the MLP input. None is a hook we harvest.
        raise BadInputError(f"{weights_path}: Gemma Scope '{repo.group(3)}' SAEs read a hook "
                            "with no equivalent among our hook points (only -res SAEs load)")
    return MODELS.get((repo.group(1), repo.group(2))), f"resid.{layer.group(1)}", raw
