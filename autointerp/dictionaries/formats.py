"""Readers for SAEs trained elsewhere, mapped onto our one Dictionary form.

sae-lens folders: `cfg.json` + `sae_weights.safetensors` with W_enc (d_in, d_sae),
b_enc, W_dec (d_sae, d_in), b_dec, and `threshold` for JumpReLU.
EleutherAI sparsify folders: `cfg.json` + `sae.safetensors` with encoder.weight
(num_latents, d_in), encoder.bias, W_dec (num_latents, d_in), b_dec; TopK with cfg k.
"""

from __future__ import annotations

import re
from pathlib import Path

from autointerp.dictionaries.dictionary import Dictionary, read_weights
from autointerp.errors import BadInputError

SAELENS_ARCHITECTURES = ("standard", "jumprelu", "topk")


def _layer_from_hook(hook: str | None) -> int | None:
    m = re.search(r"(?:blocks|layers|h)\.(\d+)", hook or "")
    return int(m.group(1)) if m else None


def _foreign_meta(method: str, cfg: dict, model: str | None, hook: str | None,
                  layer: int | None) -> dict:
    # Foreign SAEs carry no store or weights hash, so check_compatible can only check width.
    return {"method": method, "model": model, "hook": hook,
            "layer": layer if layer is not None else _layer_from_hook(hook),
            "store": None, "store_model_hash": None, "hyperparameters": cfg}


def _saelens_topk_k(cfg: dict) -> int | None:
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    return int(k) if k else None


def from_saelens(cfg: dict, weights_path: Path) -> Dictionary:
    arch = cfg.get("architecture", "standard")
    if cfg.get("activation_fn_str") == "topk" or cfg.get("activation_fn") == "topk":
        arch = "topk"  # sae-lens < 6 marked TopK SAEs by their activation function
    if arch not in SAELENS_ARCHITECTURES:
        raise BadInputError(f"{weights_path}: sae-lens architecture {arch!r} is not supported "
                            f"(supported: {', '.join(SAELENS_ARCHITECTURES)})")
    norm = cfg.get("normalize_activations") or "none"
    if norm != "none":
        raise BadInputError(f"{weights_path}: sae-lens normalize_activations={norm!r} is not "
                            "supported; fold the scaling into the weights first")
    required = ("W_enc", "b_enc", "W_dec", "b_dec") + (("threshold",) if arch == "jumprelu" else ())
    t = read_weights(weights_path, required)
    W_enc = t["W_enc"].float().T  # (d_sae, d_in)
    b_enc = t["b_enc"].float()
    W_dec = t["W_dec"].float()
    if "scaling_factor" in t:  # old sae-lens fine-tuning scale, applied to feature acts
        W_dec = W_dec * t["scaling_factor"].float()[:, None]
    b_dec = t["b_dec"].float()
    if not cfg.get("apply_b_dec_to_input", True):
        # x @ W + b == (x - b_dec) @ W + (b + b_dec @ W): same map in our form.
        b_enc = b_enc + W_enc @ b_dec
    meta_src = {**cfg, **(cfg.get("metadata") or {})}  # sae-lens 6 nests model/hook here
    meta = _foreign_meta("saelens", cfg, meta_src.get("model_name"), meta_src.get("hook_name"),
                         meta_src.get("hook_layer"))
    k = _saelens_topk_k(cfg) if arch == "topk" else None
    if arch == "topk" and k is None:
        raise BadInputError(f"{weights_path}: sae-lens topk config has no k")
    _check_width(cfg.get("d_in"), W_enc.shape[1], weights_path)
    return Dictionary(W_enc, b_enc, W_dec, b_dec, {"standard": "relu"}.get(arch, arch), k,
                      t.get("threshold"), meta)


def from_sparsify(cfg: dict, weights_path: Path) -> Dictionary:
    for flag in ("skip_connection", "transcode"):
        if cfg.get(flag):
            raise BadInputError(f"{weights_path}: sparsify {flag}=true is not supported "
                                "(the output is not a reconstruction of the input)")
    if cfg.get("activation", "topk") != "topk":
        raise BadInputError(f"{weights_path}: sparsify activation {cfg['activation']!r} "
                            "is not supported (only topk)")
    if not cfg.get("k"):
        raise BadInputError(f"{weights_path}: sparsify config has no k")
    t = read_weights(weights_path, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"))
    if "W_skip" in t:
        raise BadInputError(f"{weights_path}: sparsify skip connections are not supported")
    _check_width(cfg.get("d_in"), t["encoder.weight"].shape[1], weights_path)
    hook = weights_path.parent.name  # sparsify saves one folder per hookpoint, e.g. layers.6
    meta = _foreign_meta("sparsify", cfg, cfg.get("model"), hook, None)
    return Dictionary(t["encoder.weight"], t["encoder.bias"], t["W_dec"], t["b_dec"],
                      "topk", int(cfg["k"]), None, meta)


def _check_width(cfg_width, weights_width: int, weights_path: Path) -> None:
    if cfg_width is not None and int(cfg_width) != weights_width:
        raise BadInputError(f"{weights_path} has input width {weights_width} but its cfg.json "
                            f"says d_in {cfg_width}")

