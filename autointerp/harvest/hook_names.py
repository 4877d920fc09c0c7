"""Other tools' hook names, translated into ours.

Ours (DESIGN.md): `embed` (the embedding output, the input of block 0), `resid.L` (the output
of block L), `resid_mid.L` (after block L's attention, before its MLP), `mlp.L` and `attn.L`
(the outputs of block L's MLP and attention submodules). A bare integer L means `resid.L`.

TransformerLens / sae-lens name the hook inside the block, so its `blocks.L.hook_resid_pre`
(block L's input) is our `resid.(L-1)`, and `embed` for L = 0. sparsify names the Hugging Face
module whose output it read (`layers.L`, `layers.L.mlp`, `embed_tokens`, ...), with or without
the model's prefix (`gpt_neox.layers.3`, `model.layers.3.self_attn`, `transformer.h.3`).
Anything else is refused in one line that names the hook: a wrong layer is worse than no score.
"""

from __future__ import annotations

import re

from autointerp.errors import BadInputError

OUR_KINDS = ("resid", "resid_mid", "mlp", "attn")
_OURS = re.compile(r"^(?:(resid|resid_mid|mlp|attn)\.)?(\d+)$")
_TL = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_mid|resid_post|mlp_out|attn_out)$")
_TL_KIND = {"resid_post": "resid", "resid_mid": "resid_mid", "mlp_out": "mlp", "attn_out": "attn"}
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
