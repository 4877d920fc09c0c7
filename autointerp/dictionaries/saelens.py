"""sae-lens folders (`cfg.json` + `sae_weights.safetensors`) onto our Dictionary form.

sae-lens stores W_enc as (d_in, d_sae) and W_dec as (d_sae, d_out). What each architecture's
`encode` does (sae_lens/saes/*.py, 6.x), with x' = norm(x) - b_dec * apply_b_dec_to_input:

    standard             relu(x' W_enc + b_enc)
    topk                 topk(relu)((x' W_enc + b_enc) * |W_dec| if rescale_acts_by_decoder_norm)
    jumprelu             relu(pre) * (pre > threshold)           (batchtopk, matryoshka save as this)
    gated                (x' W_enc + b_gate > 0) * relu(x' (W_enc * exp(r_mag)) + b_mag)
    (jumprelu_)transcoder, skip_transcoder: relu / jumprelu of x W_enc + b_enc, encode only

`rescale_acts_by_decoder_norm` is folded into the weights (row i of W_enc and b_enc times
|W_dec_i|, W_dec_i divided by it), which gives the same features and reconstruction.
"""

from __future__ import annotations

from pathlib import Path

import torch

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.dictionaries.header import read_weights
from autointerp.dictionaries.saelens_hooks import (  # noqa: F401 (input_transform: its old home)
    RMSNORM_FAMILIES,
    input_transform,
    saelens_hook,
)
from autointerp.errors import BadInputError
from autointerp.harvest.hook_names import split_hook

ARCHITECTURES = ("standard", "topk", "jumprelu", "gated", "transcoder", "skip_transcoder",
                 "jumprelu_transcoder", "jumprelu_skip_transcoder")
ENCODE_ONLY = ("transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder")


def architecture(cfg: dict) -> str:
    arch = cfg.get("architecture") or "standard"
    if arch == "standard" and "topk" in (cfg.get("activation_fn"), cfg.get("activation_fn_str")):
        return "topk"  # sae-lens < 6 marked TopK SAEs by their activation function
    return arch


def from_saelens(cfg: dict, weights_path: Path, source: str | None = None) -> Dictionary:
    arch = architecture(cfg)
    if arch == "temporal":
        raise BadInputError(f"{weights_path}: sae-lens temporal SAEs are refused: their codes "
                            "depend on earlier tokens' codes, which scoring cannot reproduce")
    if arch not in ARCHITECTURES:
        raise BadInputError(f"{weights_path}: sae-lens architecture {arch!r} is not supported "
                            f"(supported: {', '.join(ARCHITECTURES)})")
    input_norm = _input_norm(cfg, weights_path)
    meta = saelens_meta(cfg, arch, source or f"sae-lens folder {weights_path.parent}")
    gated = arch == "gated"
    jump = arch == "jumprelu" or arch.startswith("jumprelu_")
    required = ("W_enc", "W_dec", "b_dec") + (("b_gate", "b_mag", "r_mag") if gated else ("b_enc",))
    t = read_weights(weights_path, required)
    if jump and "threshold" not in t:
        if "log_threshold" not in t:  # older sae-lens JumpReLU checkpoints store its log
            raise BadInputError(f"dictionary weights {weights_path} lack tensor(s) threshold")
        t["threshold"] = t["log_threshold"].float().exp()
    W_enc, W_dec = t["W_enc"].float().T, t["W_dec"].float()  # (d_sae, d_in), (d_sae, d_out)
    b_enc = (t["b_gate"] if gated else t["b_enc"]).float()
    if "scaling_factor" in t:  # sae-lens < 4 fine-tuning scale on the features, before W_dec
        W_dec = W_dec * t["scaling_factor"].float()[:, None]
    if cfg.get("d_in") is not None and int(cfg["d_in"]) != W_enc.shape[1]:
        raise BadInputError(f"{weights_path} has input width {W_enc.shape[1]} but its cfg.json "
                            f"says d_in {cfg['d_in']}")
    k = None
    if arch == "topk":
        k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
        if not k:
            raise BadInputError(f"{weights_path}: sae-lens topk config has no k")
        if cfg.get("rescale_acts_by_decoder_norm"):
            norms = W_dec.norm(dim=-1)  # (d_sae,)
            W_enc, b_enc, W_dec = W_enc * norms[:, None], b_enc * norms, W_dec / norms[:, None]
    activation = {"standard": "relu", "topk": "topk", "gated": "gated"}.get(
        arch, "jumprelu" if jump else "relu")
    return Dictionary(W_enc, b_enc, W_dec, t["b_dec"].float(), activation, k, t.get("threshold"),
                      meta, b_mag=t.get("b_mag"), r_mag=t.get("r_mag"),
                      apply_b_dec_to_input=cfg.get("apply_b_dec_to_input", True)
                      and arch not in ENCODE_ONLY, input_norm=input_norm)


def _input_norm(cfg: dict, weights_path: Path) -> str:
    norm = cfg.get("normalize_activations")
    norm = {None: "none", False: "none", True: "expected_average_only_in"}.get(norm, norm)
    if norm in ("none", "layer_norm", "constant_norm_rescale"):
        return norm
    if norm == "expected_average_only_in":
        raise BadInputError(f"{weights_path}: sae-lens normalize_activations="
                            "'expected_average_only_in' scales inputs by a factor measured on "
                            "its training data that the folder does not hold; load it as "
                            "saelens:RELEASE/ID (sae-lens folds the factor) or fold it first")
    raise BadInputError(f"{weights_path}: sae-lens normalize_activations={norm!r} depends on "
                        "statistics the folder does not hold; fold it into the weights first")


def saelens_meta(cfg: dict, arch: str, source: str) -> dict:
    """Our metadata for a sae-lens config: hook translated (saelens_hooks.py), TransformerLens
    processing noted as an input transform."""
    md = {**cfg, **(cfg.get("metadata") or {})}  # sae-lens 6 nests model and hook here
    hook, raw, transform = saelens_hook(md, source)
    meta = {"method": "saelens", "architecture": arch, "model": md.get("model_name"),
            "hook": hook, "layer": split_hook(hook)[1], "hook_source_name": raw,
            "source": source, "input_transform": transform,
            "store": None, "store_model_hash": None, "hyperparameters": cfg}
    if md.get("hf_hook_name"):
        meta["hook_hf_name"] = md["hf_hook_name"]
    if arch in ENCODE_ONLY:
        meta["encode_only"] = True
        meta["hook_out_source_name"] = md.get("hook_name_out")
    return meta


def tensors_to_dictionary(cfg: dict, tensors: dict[str, torch.Tensor], source: str,
                          tmp: Path) -> Dictionary:
    """A sae-lens SAE held in memory (config dict + state dict) as our Dictionary, read
    through the same path as a folder so that both give the same numbers."""
    from safetensors.torch import save_file

    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
              str(tmp / "sae_weights.safetensors"))
    return from_saelens(cfg, tmp / "sae_weights.safetensors", source)
