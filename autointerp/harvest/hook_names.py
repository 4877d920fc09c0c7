"""Other tools' hook names, translated into ours.

Ours (docs/design.md): `embed` (the embedding output, the input of block 0), `resid.L` (the output
of block L), `resid_mid.L` (after block L's attention, before its MLP), `mlp.L` and `attn.L`
(the outputs of block L's MLP and attention submodules). A bare integer L means `resid.L`.
Inside the sublayers (autointerp/harvest/sublayers.py): `attn_z.L` (the heads' outputs before
the output projection), `mlp_in.L` (what the MLP receives), `mlp_normalized.L` (the MLP's input
normalised, before the norm's weight and bias), `attn_post.L` / `mlp_post.L` (after the
post-norms of Gemma 2/3 and OLMo 2) and `token_embed` (the token embedding alone).

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
SUBLAYER_LAYER_KINDS = ("attn_z", "mlp_in", "mlp_normalized", "attn_post", "mlp_post")
LAYER_KINDS = OUR_KINDS + SUBLAYER_LAYER_KINDS
UNLAYERED = ("embed", "token_embed")
HOOK_KINDS = UNLAYERED + LAYER_KINDS
INPUT_TRANSFORMS = ("center", "fold_value_biases")
"""Besides None: `center` subtracts each position's mean over d_model; `fold_value_biases`
subtracts from attn_z what TransformerLens's fold_value_biases moves out of it."""
_VOCABULARY = ("embed, token_embed, resid.L, resid_mid.L, mlp.L, attn.L, attn_z.L, mlp_in.L, "
               "mlp_normalized.L, attn_post.L or mlp_post.L")
_OURS = re.compile(r"^(?:(" + "|".join(LAYER_KINDS) + r")\.)?(\d+)$")
_TL = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_mid|mlp_in|resid_post|mlp_out|attn_out)$")
# `hook_mlp_in` (with use_hook_mlp_in) is a copy of `hook_resid_mid` in sequential blocks.
_TL_KIND = {"resid_post": "resid", "resid_mid": "resid_mid", "mlp_in": "resid_mid", "mlp_out": "mlp", "attn_out": "attn"}
# Hooks of TransformerLens's submodules: `attn.hook_z` (heads' outputs, flattened by sae-lens's
# reshape_activations="hook_z"), `ln2.hook_normalized` (before the norm's weight and bias, with
# or without fold_ln), `mlp.hook_in` (what the MLP receives).
_TL_SUB = re.compile(r"^blocks\.(\d+)\.(attn\.hook_z|ln2\.hook_normalized|mlp\.hook_in)$")
_TL_SUB_KIND = {"attn.hook_z": "attn_z", "ln2.hook_normalized": "mlp_normalized", "mlp.hook_in": "mlp_in"}
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
    if text in ("hook_embed", "token_embed"):
        return "token_embed"  # differs from block 0's input where positions are added (GPT-2)
    if m := _TL_SUB.match(text):
        return f"{_TL_SUB_KIND[m.group(2)]}.{m.group(1)}"
    if m := _HF.match(text):
        return f"{_HF_KIND[m.group(2)]}.{m.group(1)}"
    if _HF_EMBED.match(text):
        return "embed"
    if re.match(r"^(?:[\w.]*\.)?wte$", text):  # GPT-2's token embedding, before positions
        return "token_embed"
    raise BadInputError(f"hook '{text}' has no equivalent among our hook points ({_VOCABULARY}): "
                        "it cannot be harvested, so it is refused")


# A Hugging Face module and the side of it that was read, as sae-lens's `hf_hook_name` writes it
# (`model.layers.5.self_attn.o_proj.input`, `model.layers.5.pre_feedforward_layernorm.output`,
# `model.layers.5`): the output unless `.input` says otherwise.
_HF_POINT = re.compile(r"^(?:[\w.]*\.)?(?:layers|h)\.(\d+)(?:\.([\w.]+))?$")
_HF_POINT_KIND = {
    (None, "output"): "resid", ("mlp", "output"): "mlp", ("mlp", "input"): "mlp_in",
    ("self_attn", "output"): "attn", ("attn", "output"): "attn", ("attention", "output"): "attn",
    ("self_attn.o_proj", "input"): "attn_z", ("attn.c_proj", "input"): "attn_z",
    ("attention.dense", "input"): "attn_z", ("pre_feedforward_layernorm", "output"): "mlp_in",
    ("ln_2", "output"): "mlp_in", ("post_feedforward_layernorm", "output"): "mlp_post",
}


def translate_hf_point(name: str, post_norm: bool) -> str:
    """Our name for a Hugging Face module's input or output (sae-lens's `hf_hook_name`).
    `post_attention_layernorm` is the MLP's input norm in pre-norm families (Llama) but the
    attention's post-norm where the model has post-norms (`post_norm`: Gemma 2/3, OLMo 2)."""
    text = str(name).strip()
    path, dot, side = text.rpartition(".")
    if not dot or side not in ("input", "output"):
        path, side = text, "output"
    m = _HF_POINT.match(path)
    if m:
        module = m.group(2)
        kind = _HF_POINT_KIND.get((module, side))
        if (module, side) == ("post_attention_layernorm", "output"):
            kind = "attn_post" if post_norm else "mlp_in"
        if kind:
            return f"{kind}.{m.group(1)}"
    if re.match(r"^(?:[\w.]*\.)?embed_tokens$", path) and side == "output":
        return "token_embed"
    raise BadInputError(f"Hugging Face hook point '{text}' has no equivalent among our hook "
                        f"points ({_VOCABULARY}): it cannot be harvested, so it is refused")


_HOW = {
    "embed": "input of block 0 (the embedding output, positional embeddings included)",
    "token_embed": "output of the token embedding module alone (no positional embedding; "
                   "Gemma's sqrt(d_model) scaling included)",
    "resid": "output of block {L} (the residual stream), raw, no final norm",
    "resid_mid": "input of block {L} plus its attention's output (after the post-attention "
                 "norm in Gemma 2/3 and OLMo 2): the residual stream before the MLP",
    "mlp": "output of block {L}'s MLP module, before any post-norm",
    "attn": "output of block {L}'s attention module, before any post-norm",
    "attn_z": "input of block {L}'s attention output projection (o_proj / c_proj / dense): "
              "the heads' outputs, flattened to n_heads x d_head",
    "mlp_in": "input of block {L}'s MLP module: after its norm, weight and bias applied",
    "mlp_normalized": "input of block {L}'s pre-MLP norm, normalised, before the norm's weight "
                      "and bias (TransformerLens ln2.hook_normalized)",
    "attn_post": "output of block {L}'s post-attention norm (Gemma 2/3, OLMo 2)",
    "mlp_post": "output of block {L}'s post-MLP norm (Gemma 2/3, OLMo 2)",
}
_TRANSFORM_HOW = {"center": "; minus each position's mean over d_model (TransformerLens's "
                            "center_writing_weights; none for RMSNorm models)",
                  "fold_value_biases": "; minus the value bias TransformerLens's "
                                       "fold_value_biases moves out of hook_z"}


def describe_hook(name: str, transform: str | None = None) -> str:
    """How a hook point of ours is read, in words (for `inspect`)."""
    kind, layer = split_hook(name)
    return _HOW[kind].replace("{L}", str(layer)) + _TRANSFORM_HOW.get(transform or "", "")


def split_hook(name: str) -> tuple[str, int | None]:
    """('resid', 7) for 'resid.7'; ('embed', None) for 'embed'. `name` must be ours."""
    if name in UNLAYERED:
        return name, None
    kind, _, layer = name.rpartition(".")
    return kind, int(layer)


@dataclass(frozen=True)
class Hook:
    kind: str
    """One of HOOK_KINDS."""
    layer: int | None
    """Decoder block index, from 0; None for embed."""

    @property
    def name(self) -> str:
        return self.kind if self.kind in UNLAYERED else f"{self.kind}.{self.layer}"


def parse_hook(spec: str | int, n_layers: int, model_name: str = "the model") -> Hook:
    """`embed`, `resid.15`, `resid_mid.3`, `mlp.3`, `attn_z.0`, ... or a bare layer number (resid)."""
    text = str(spec).strip()
    if text in UNLAYERED:
        return Hook(text, None)
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
        raise BadInputError(f"unknown input transform {transform!r}: use none, "
                            f"{' or '.join(INPUT_TRANSFORMS)}")
    return transform
