"""Cross-layer transcoders in the layout sae-lens's CLT loader (`mntss_clt_layer_transcoder`)
reads, the circuit-tracer format:

    config.yaml             model_name, feature_input_hook (e.g. hook_resid_mid or
                            ln2.hook_normalized), feature_output_hook (e.g. hook_mlp_out)
    W_enc_L.safetensors     W_enc_L (d_sae, d_in), b_enc_L (d_sae,), b_dec_L (d_in,),
                            optionally threshold_L (d_sae,)
    W_dec_L.safetensors     W_dec_L (d_sae, layers L.., d_out): the decoders into every later
                            layer (optional here: encode-only)

One encoder per layer, each reading that layer's `blocks.L.<feature_input_hook>`, so each layer
is one encode-only dictionary, `ROOT/W_enc_L.safetensors`, scored on its own (a root scores every
layer): relu(x W_enc + b_enc), or with threshold_L the JumpReLU circuit-tracer applies (sae-lens
ignores it and reads a ReLU). The model is loaded without fold_ln, as sae-lens records.
"""

from __future__ import annotations

from pathlib import Path

import torch

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.dictionaries.header import CLT_CONFIG, CLT_ENCODER
from autointerp.dictionaries.saelens_hooks import saelens_hook
from autointerp.errors import BadInputError
from autointerp.harvest.hook_names import split_hook


def read_config(path: Path) -> dict:
    import yaml  # a dependency of transformers

    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise BadInputError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(cfg, dict) or not cfg.get("feature_input_hook"):
        raise BadInputError(f"{path} names no feature_input_hook: not a cross-layer transcoder")
    return cfg


def _tensors(path: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The file's tensors (sources.read_weights is not imported: sources imports this module)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        t = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise BadInputError(f"dictionary weights {path} are missing or corrupt ({e})") from None
    missing = [n for n in names if n not in t]
    if missing:
        raise BadInputError(f"dictionary weights {path} lack tensor(s) {', '.join(missing)}")
    return t


def from_clt(weights_path: Path, source: str | None = None) -> Dictionary:
    layer = int(CLT_ENCODER.match(weights_path.name).group(1))
    cfg = read_config(weights_path.parent / CLT_CONFIG)
    names = (f"W_enc_{layer}", f"b_enc_{layer}", f"b_dec_{layer}")
    t = _tensors(weights_path, names)
    W_enc, b_enc = t[names[0]].float(), t[names[1]].float()  # (d_sae, d_in), (d_sae,)
    decoder = weights_path.parent / f"W_dec_{layer}.safetensors"
    W_dec = (_tensors(decoder, (f"W_dec_{layer}",))[f"W_dec_{layer}"].float().sum(dim=1)
             if decoder.exists() else torch.zeros_like(W_enc))  # summed, as sae-lens does
    source = source or f"cross-layer transcoder {weights_path}"
    md = {"model_name": cfg.get("model_name"),
          "hook_name": f"blocks.{layer}.{cfg['feature_input_hook']}",
          "model_from_pretrained_kwargs": {"fold_ln": False}}
    hook, raw, transform = saelens_hook(md, source)
    meta = {"method": "clt", "architecture": "cross-layer transcoder", "model": md["model_name"],
            "hook": hook, "layer": split_hook(hook)[1], "hook_source_name": raw,
            "hook_out_source_name": cfg.get("feature_output_hook"), "source": source,
            "input_transform": transform, "encode_only": True, "store": None,
            "store_model_hash": None,
            "hyperparameters": {k: v for k, v in cfg.items() if isinstance(v, (str, int, float))}}
    threshold = t.get(f"threshold_{layer}")
    return Dictionary(W_enc, b_enc, W_dec, t[names[2]].float(),
                      "relu" if threshold is None else "jumprelu", None, threshold, meta,
                      apply_b_dec_to_input=False)
