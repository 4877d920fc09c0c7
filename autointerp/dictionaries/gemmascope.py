"""Gemma Scope `params.npz` (Lieberum et al. 2024) onto our Dictionary form.

The file holds W_enc (d_model, d_sae), W_dec (d_sae, d_model), b_enc, b_dec and threshold;
the published JumpReLU encoder does not subtract b_dec:

    pre = x @ W_enc + b_enc;   f = (pre > threshold) * relu(pre);   x_hat = f @ W_dec + b_dec

The file says nothing about where it was trained; the Hub path does
(`google/gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71/params.npz`), as sae-lens's
Gemma Scope loader reads it: `-res` SAEs read the output of block L (resid.L), `-mlp` the MLP
output after Gemma 2's post-MLP norm (mlp_post.L), `-att` the heads' outputs before o_proj
(attn_z.L), transcoders the MLP's normalised input (mlp_normalized.L, encode-only), and
`-res/embedding` the token embedding before Gemma's sqrt(d_model) scaling: read at our scaled
token_embed with W_enc divided by that factor, which gives the same features. Without such a
path the hook is left undeclared.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.dictionaries.header import read_weights
from autointerp.harvest.hook_names import split_hook

_REPO = re.compile(r"gemma-scope-(\d+b)-(pt|it)-(res|mlp|att|transcoders)\w*")
_LAYER = re.compile(r"(?:^|/)layer_(\d+)(?:/|$)")
MODELS = {("2b", "pt"): "google/gemma-2-2b", ("9b", "pt"): "google/gemma-2-9b",
          ("9b", "it"): "google/gemma-2-9b-it", ("27b", "pt"): "google/gemma-2-27b"}


def from_gemmascope(weights_path: Path, source: str | None = None) -> Dictionary:
    t = read_weights(weights_path, ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"))
    model, hook, raw = _where(weights_path)
    W_enc = t["W_enc"].float().T  # (d_sae, d_model)
    if hook == "token_embed":
        W_enc = W_enc / W_enc.shape[1] ** 0.5
    meta = {"method": "gemmascope", "architecture": "jumprelu", "model": model, "hook": hook,
            "layer": split_hook(hook)[1] if hook else None, "hook_source_name": raw,
            "source": source or f"gemma-scope npz {weights_path}", "input_transform": None,
            "store": None, "store_model_hash": None, "hyperparameters": {}}
    if hook is not None and hook.startswith("mlp_normalized"):
        meta["encode_only"] = True  # a transcoder: its decoder predicts the MLP's output
    return Dictionary(W_enc, t["b_enc"], t["W_dec"], t["b_dec"], "jumprelu", None,
                      t["threshold"], meta, apply_b_dec_to_input=False)


def _where(weights_path: Path) -> tuple[str | None, str | None, str | None]:
    """(model, our hook, the path's own words for it) from a Gemma Scope Hub path."""
    text = Path(os.path.abspath(weights_path)).as_posix()  # not resolve(): Hub cache files are symlinks
    repo, layer = _REPO.search(text), _LAYER.search(text)
    if repo and re.search(r"(?:^|/)embedding(?:/|$)", text[repo.end():]):
        return MODELS.get((repo.group(1), repo.group(2))), "token_embed", f"{repo.group(0)}/embedding"
    if not repo or not layer:
        return None, None, None
    raw = f"{repo.group(0)}/layer_{layer.group(1)}"
    kind = {"res": "resid", "mlp": "mlp_post", "att": "attn_z",
            "transcoders": "mlp_normalized"}[repo.group(3)]
    return MODELS.get((repo.group(1), repo.group(2))), f"{kind}.{layer.group(1)}", raw
