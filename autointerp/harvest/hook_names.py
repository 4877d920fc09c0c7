"""Other tools' hook names, translated into ours.

Ours (docs/design.md): `embed` (the embedding output, the input of block 0), `resid.L` (the output
of block L), `resid_mid.L` (after block L's attention, before its MLP), `mlp.L` and `attn.L`
(the outputs of block L's MLP and attention submodules). A bare integer L means `resid.L`.

TransformerLens / sae-lens name the hook inside the block, so its `blocks.L.hook_resid_pre`
(block L's input) is our `resid.(L-1)`, and `embed` for L = 0. sparsify names the Hugging Face
module whose output it read (`layers.L`, `layers.L.mlp`, `embed_tokens`, ...), with or without
the model's prefix (`gpt_neox.layers.3`, `model.layers.3.self_attn`, `transformer.h.3`).
Anything else is refused in one line that names the hook: a wrong layer is worse than no score.

Also here: our names parsed into a `Hook` (kind, layer) and the `--hook`/`--layer` options
resolved into one of our names; how each point is read from a model is autointerp/harvest/hooks.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from autointerp.errors import BadInputError

OUR_KINDS = ("resid", "resid_mid", "mlp", "attn")
LAYER_KINDS = OUR_KINDS
HOOK_KINDS = ("embed",) + LAYER_KINDS
INPUT_TRANSFORMS = ("center",)
"""Besides None: `center` subtracts each position's mean over d_model."""
_VOCABULARY = "embed, resid.L, resid_mid.L, mlp.L or attn.L"
_OURS = re.compile(r"^(?:(resid|resid_mid|mlp|attn)\.)?(\d+)$")
_TL = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_mid|mlp_in|resid_post|mlp_out|attn_out)$")
# `hook_mlp_in` (with use_hook_mlp_in) is a copy of `hook_resid_mid` in sequential blocks.
_TL_KIND = {"resid_post": "resid", "resid_mid": "resid_mid", "mlp_in": "resid_mid", "mlp_out": "mlp", "attn_out": "attn"}
# A Hugging Face module path ending in a block (`layers.L`, `h.L`) and optionally its
# attention or MLP child, as sparsify's hookpoints are written.
_HF = re.compile(r"^(?:[\w.]*\.)?(?:layers|h)\.(\d+)(?:\.(mlp|self_attn|attention|attn))?$")
_HF_KIND = {None: "resid", "mlp": "mlp", "self_attn": "attn", "attention": "attn", "attn": "attn"}
# Embedding modules whose output is the input of block 0 in rotary families (Llama,
# GPT-NeoX). GPT-2's `wte` is not: its positional embedding is added after it.
_HF_EMBED = re.compile(r"^(?:[\w.]*\.)?(?:embed_tokens|embed_in)$")


def translate_hook(name: str | int) -> str:
    """Our name for a hook point written in our, TransformerLens/sae-lens or sparsify
    (Hugging Face module) vocabulary; BadInputError for names with no equivalent."""
    text = str(name).strip()
    if text == "embed":
        return "embed"
    if m := _OURS.match(text):
        return f"{m.group(1) or 'resid'}.{m.group(2)}"
    if m := _TL.match(text):
        layer, kind = int(m.group(1)), m.group(2)
        if kind == "resid_pre":
            return "embed" if layer == 0 else f"resid.{layer - 1}"
        return f"{_TL_KIND[kind]}.{layer}"
    if text == "hook_embed":
        raise BadInputError("hook 'hook_embed' is the token embedding alone, which differs from "
                            "block 0's input when the model adds positional embeddings: use "
                            "'blocks.0.hook_resid_pre' if that is what the SAE read")
    if m := _HF.match(text):
        return f"{_HF_KIND[m.group(2)]}.{m.group(1)}"
    if _HF_EMBED.match(text):
        return "embed"
    raise BadInputError(f"hook '{text}' has no equivalent among our hook points (embed, resid.L, "
                        "resid_mid.L, mlp.L, attn.L): it cannot be harvested, so it is refused")


def split_hook(name: str) -> tuple[str, int | None]:
    """('resid', 7) for 'resid.7'; ('embed', None) for 'embed'. `name` must be ours."""
    if name == "embed":
        return "embed", None
    kind, _, layer = name.rpartition(".")
    return kind, int(layer)


@dataclass(frozen=True)
class Hook:
    kind: str
    """embed | resid | resid_mid | mlp | attn"""
    layer: int | None
    """Decoder block index, from 0; None for embed."""

    @property
    def name(self) -> str:
        return "embed" if self.kind == "embed" else f"{self.kind}.{self.layer}"


def parse_hook(spec: str | int, n_layers: int, model_name: str = "the model") -> Hook:
    """`embed`, `resid.15`, `resid_mid.3`, `mlp.3`, `attn.0` or a bare layer number (resid)."""
    text = str(spec).strip()
    if text == "embed":
        return Hook("embed", None)
    kind, _, layer_text = text.rpartition(".") if "." in text else ("resid", "", text)
    if kind not in LAYER_KINDS:
        raise BadInputError(f"unknown hook point '{text}': use {_VOCABULARY}")
    try:
        layer = int(layer_text)
    except ValueError:
        raise BadInputError(f"hook point '{text}' needs an integer layer, e.g. {kind}.3") from None
    if not 0 <= layer < n_layers:
        raise BadInputError(f"layer {layer} is out of range: {model_name} has layers 0..{n_layers - 1}")
    return Hook(kind, layer)


def resolve_hook_name(hook: str, layer: int | None) -> str:
    """Our name for `--hook HOOK [--layer L]`: a kind plus a layer (`--hook mlp --layer 3`), or
    one full name in our, TransformerLens/sae-lens or sparsify vocabulary (`blocks.3.hook_resid_pre`)."""
    text = str(hook).strip()
    if text in LAYER_KINDS:
        if layer is None:
            raise BadInputError(f"--hook {text} needs --layer (or give the full name, e.g. {text}.3)")
        return f"{text}.{layer}"
    name = translate_hook(text)
    named_layer = split_hook(name)[1]
    if layer is not None and named_layer != layer:
        raise BadInputError(f"--hook {text} is {name}, which is not at --layer {layer}; "
                            "drop --layer or make them agree")
    return name


def check_input_transform(transform: str | None) -> str | None:
    if transform in (None, "none", ""):
        return None
    if transform not in INPUT_TRANSFORMS:
        raise BadInputError(f"unknown input transform {transform!r}: use none or center")
    return transform
