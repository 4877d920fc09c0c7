"""dictionary_learning folders (`ae.pt` + `config.json`, the format of SAEBench's suites) onto
our Dictionary form. config.json's `trainer` names the class that saved `ae.pt`; what each
class's `encode` does (dictionary_learning 0.1, dictionary.py and trainers/):

    AutoEncoder (standard, p-anneal)   relu(encoder(x - bias)); from_pretrained divides the
                                       decoder by its column norms and multiplies the encoder
                                       rows and biases by them, so that is what we read
    AutoEncoderNew (April update)      relu(encoder(x)), decoder bias added on decode
    GatedAutoEncoder (gated)           gate (encoder(x - b) + gate_bias > 0) times
                                       relu(exp(r_mag) * encoder(x - b) + mag_bias)
    JumpReluAutoEncoder                relu(pre * (pre > threshold)), pre = x W_enc + b_enc
    AutoEncoderTopK (topk)             top k of relu(encoder(x - b_dec))
    BatchTopKSAE, MatryoshkaBatchTopKSAE   relu(pre) * (relu(pre) > threshold), one scalar
                                       threshold learnt in training (-1: never set: plain ReLU)

The hook: `submodule_name` (`resid_post_layer_8`, `attn_out_layer_3`, `mlp_out_layer_3`) when the
trainer recorded one, else the output of block `layer`, as sae-lens's converter reads these
folders. Read from Hugging Face modules with nnsight: no TransformerLens processing.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.errors import BadInputError

CLASSES = ("AutoEncoder", "AutoEncoderNew", "GatedAutoEncoder", "JumpReluAutoEncoder",
           "AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE")
_SUBMODULE = re.compile(r"^(resid_post|attn_out|mlp_out)_layer_(\d+)$")
_KIND = {"resid_post": "resid", "attn_out": "attn", "mlp_out": "mlp"}


def from_dictionary_learning(cfg: dict, weights_path: Path, source: str | None = None) -> Dictionary:
    trainer = cfg.get("trainer") or {}
    cls = trainer.get("dict_class")
    if cls not in CLASSES:
        raise BadInputError(f"{weights_path}: dictionary_learning class {cls!r} is not supported "
                            f"(supported: {', '.join(CLASSES)})")
    t = _read_pt(weights_path)
    hook = _hook(trainer, weights_path)
    meta = {"method": "dictionary_learning", "architecture": trainer.get("trainer_class") or cls,
            "model": trainer.get("lm_name"), "hook": hook, "layer": int(hook.split(".")[1]),
            "hook_source_name": trainer.get("submodule_name") or f"layer {trainer.get('layer')}",
            "source": source or f"dictionary_learning folder {weights_path.parent}",
            "input_transform": None, "store": None, "store_model_hash": None,
            "hyperparameters": trainer}
    try:
        return _build(cls, t, meta)
    except KeyError as e:
        raise BadInputError(f"dictionary weights {weights_path} lack tensor {e.args[0]} "
                            f"that {cls} saves") from None


def _read_pt(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise BadInputError(f"dictionary weights {path} are missing")
    try:  # weights_only: a state dict of tensors, never arbitrary pickled objects
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BadInputError(f"dictionary weights {path} are truncated, corrupt or not a state "
                            f"dict ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return {k: v.float() for k, v in state.items()}


def _hook(trainer: dict, weights_path: Path) -> str:
    name = trainer.get("submodule_name")
    if name:
        m = _SUBMODULE.match(str(name))
        if not m:
            raise BadInputError(f"{weights_path}: dictionary_learning submodule_name {name!r} "
                                "has no equivalent among our hook points")
        return f"{_KIND[m.group(1)]}.{m.group(2)}"
    if not isinstance(trainer.get("layer"), int):
        raise BadInputError(f"{weights_path}: dictionary_learning config names no layer")
    return f"resid.{trainer['layer']}"


def _build(cls: str, t: dict[str, torch.Tensor], meta: dict) -> Dictionary:
    if cls == "AutoEncoder":
        W_enc, b_enc, W_dec = t["encoder.weight"], t["encoder.bias"], t["decoder.weight"].T
        norms = W_dec.norm(dim=-1)  # (d_sae,): what from_pretrained's normalize_decoder does
        return Dictionary(W_enc * norms[:, None], b_enc * norms, W_dec / norms[:, None], t["bias"],
                          "relu", meta=meta)
    if cls == "AutoEncoderNew":
        return Dictionary(t["encoder.weight"], t["encoder.bias"], t["decoder.weight"].T,
                          t["decoder.bias"], "relu", meta=meta, apply_b_dec_to_input=False)
    if cls == "GatedAutoEncoder":
        return Dictionary(t["encoder.weight"], t["gate_bias"], t["decoder.weight"].T,
                          t["decoder_bias"], "gated", meta=meta, b_mag=t["mag_bias"],
                          r_mag=t["r_mag"])
    if cls == "JumpReluAutoEncoder":
        return Dictionary(t["W_enc"].T, t["b_enc"], t["W_dec"], t["b_dec"], "jumprelu",
                          threshold=t["threshold"], meta=meta, apply_b_dec_to_input=False)
    if cls == "AutoEncoderTopK":
        return Dictionary(t["encoder.weight"], t["encoder.bias"], t["decoder.weight"].T,
                          t["b_dec"], "topk", int(t["k"].item()), meta=meta)
    # BatchTopK and Matryoshka: at inference one scalar threshold on the ReLU output.
    W_enc, b_enc = (t["W_enc"].T, t["b_enc"]) if "W_enc" in t else (t["encoder.weight"], t["encoder.bias"])
    W_dec = t["W_dec"] if "W_dec" in t else t["decoder.weight"].T
    threshold = t["threshold"].reshape(()).expand(W_enc.shape[0]).clone()
    return Dictionary(W_enc, b_enc, W_dec, t["b_dec"], "jumprelu", threshold=threshold, meta=meta)
