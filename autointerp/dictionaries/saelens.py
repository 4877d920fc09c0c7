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

import re
from pathlib import Path

import torch
from packaging.version import InvalidVersion, Version

from autointerp.dictionaries.dictionary import Dictionary, canonical_model
from autointerp.dictionaries.header import read_weights
from autointerp.errors import BadInputError
from autointerp.harvest.hook_names import split_hook, translate_hook

ARCHITECTURES = ("standard", "topk", "jumprelu", "gated", "transcoder", "skip_transcoder",
                 "jumprelu_transcoder", "jumprelu_skip_transcoder")
# Families whose blocks normalise the attention and MLP outputs before adding them (Gemma 1 is
# `gemma-2b` / `gemma-7b`, without such norms).
_POST_NORM_MODELS = re.compile(r"^(?:gemma-?[23]-|gemma[23]|olmo-?[23]-)")
ENCODE_ONLY = ("transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder")
# TransformerLens only centres writing weights of LayerNorm models; these families use RMSNorm.
RMSNORM_FAMILIES = ("llama", "gemma", "mistral", "mixtral", "qwen", "smollm", "olmo", "phi-3")


def architecture(cfg: dict) -> str:
    arch = cfg.get("architecture") or "standard"
    if arch == "standard" and "topk" in (cfg.get("activation_fn"), cfg.get("activation_fn_str")):
        return "topk"  # sae-lens < 6 marked TopK SAEs by their activation function
    return arch


def from_saelens(cfg: dict, weights_path: Path, source: str | None = None) -> Dictionary:
    arch = architecture(cfg)
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
    """Our metadata for a sae-lens config: hook translated, TransformerLens centring noted."""
    md = {**cfg, **(cfg.get("metadata") or {})}  # sae-lens 6 nests model and hook here
    raw = md.get("hook_name") or md.get("hook_point")
    if not raw:
        raise BadInputError(f"{source}: sae-lens config names no hook_name")
    if md.get("hook_head_index") is not None or md.get("reshape_activations") == "hook_z":
        raise BadInputError(f"{source}: hook '{raw}' (one attention head / hook_z) has no "
                            "equivalent among our hook points")
    hook = translate_hook(raw)
    _check_sublayer_hook(raw, md.get("model_name"), source)
    meta = {"method": "saelens", "architecture": arch, "model": md.get("model_name"),
            "hook": hook, "layer": split_hook(hook)[1], "hook_source_name": raw,
            "source": source, "input_transform": input_transform(md),
            "store": None, "store_model_hash": None, "hyperparameters": cfg}
    if arch in ENCODE_ONLY:
        meta["encode_only"] = True
        meta["hook_out_source_name"] = md.get("hook_name_out")
    return meta


def _check_sublayer_hook(raw: str, model: str | None, source: str) -> None:
    """In Gemma 2/3 and OLMo 2/3, TransformerLens's hook_attn_out / hook_mlp_out come after the
    block's post-attention / post-MLP norm (`use_normalization_before_and_after`, its
    POST_NORM_ARCHITECTURES), while our attn.L / mlp.L are the modules' own outputs (what
    sparsify reads): the same name would read another activation, so it is refused."""
    kind = re.search(r"\.hook_(attn|mlp)_out$", raw)
    if kind and _POST_NORM_MODELS.match(canonical_model(model) or ""):
        raise BadInputError(f"{source}: hook '{raw}' of {model} is read after the block's "
                            f"post-{kind.group(1)} norm, which our {kind.group(1)}.L (the "
                            "module's own output) is not: it has no equivalent, so it is refused")


def input_transform(md: dict) -> str | None:
    """"center" when the SAE read a TransformerLens residual stream with centred writing
    weights, which differs from Hugging Face's hidden states by the per-position mean.

    sae-lens records the model's loading kwargs in `model_from_pretrained_kwargs` since its
    PR #279 (Sep 2024), which also switched training to `from_pretrained_no_processing`
    (no centring unless the kwargs ask for it). A config without them was made before that,
    by `HookedTransformer.from_pretrained`, whose default centres writing weights, unless
    its sae-lens version (>= 4) says it is newer."""
    if (md.get("model_class_name") or "HookedTransformer") != "HookedTransformer":
        return None
    if any(f in str(md.get("model_name") or "").lower() for f in RMSNORM_FAMILIES):
        return None
    kwargs = md.get("model_from_pretrained_kwargs")
    if isinstance(kwargs, dict):  # recorded: passed to from_pretrained_no_processing
        return "center" if kwargs.get("center_writing_weights") else None
    # sae-lens fills a missing sae_lens_version with its own when it loads a config, but
    # keeps a pre-6.0 config's training version as None: trust the training version first.
    key = "sae_lens_training_version" if "sae_lens_training_version" in md else "sae_lens_version"
    version = md.get(key)
    try:
        recent = version is not None and Version(str(version)) >= Version("4")
    except InvalidVersion:
        recent = False
    return None if recent else "center"


def tensors_to_dictionary(cfg: dict, tensors: dict[str, torch.Tensor], source: str,
                          tmp: Path) -> Dictionary:
    """A sae-lens SAE held in memory (config dict + state dict) as our Dictionary, read
    through the same path as a folder so that both give the same numbers."""
    from safetensors.torch import save_file

    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
              str(tmp / "sae_weights.safetensors"))
    return from_saelens(cfg, tmp / "sae_weights.safetensors", source)
