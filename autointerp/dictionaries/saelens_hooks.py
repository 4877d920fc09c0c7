"""Which activation a sae-lens config's dictionary read, in our vocabulary, and how
TransformerLens's weight processing (recorded in the config's loading kwargs) changed it.

    hook_name                           ours
    blocks.L.attn.hook_z (+ reshape)    attn_z.L; fold_value_biases when the model was processed
    blocks.L.ln2.hook_normalized        mlp_normalized.L (the same with or without fold_ln)
    blocks.L.mlp.hook_in                mlp_in.L; with fold_ln the MLP receives the normalised
                                        vector, so mlp_normalized.L
    blocks.L.hook_{attn,mlp}_out        attn.L / mlp.L, or attn_post.L / mlp_post.L in the
                                        families with post-norms (Gemma 2/3, OLMo 2/3)
    hook_embed                          token_embed

Where the config also names the Hugging Face module the release read (`hf_hook_name`), that
module decides, after a check that both name the same place of the same layer (the MLP's
input, the attention's output, ...): sae-lens writes `hook_mlp_in` (pre-norm) beside
`pre_feedforward_layernorm.output` for Gemma Scope 2 transcoders, and the module is what was
read. Two names of different places are refused: a wrong hook is worse than no score.
"""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

from autointerp.dictionaries.header import canonical_model
from autointerp.errors import BadInputError
from autointerp.harvest.hook_names import split_hook, translate_hf_point, translate_hook

# Families whose blocks normalise the attention and MLP outputs before adding them (Gemma 1 is
# `gemma-2b` / `gemma-7b`, without such norms).
POST_NORM_MODELS = re.compile(r"^(?:gemma-?[23]-|gemma[23]|olmo-?[23]-)")
# TransformerLens only centres writing weights of LayerNorm models; these families use RMSNorm.
RMSNORM_FAMILIES = ("llama", "gemma", "mistral", "mixtral", "qwen", "smollm", "olmo", "phi-3")
# The place in the block each of our hook kinds is at, for the hf_hook_name agreement check.
_PLACE = {"resid_mid": "mlp input", "mlp_in": "mlp input", "mlp_normalized": "mlp input",
          "attn": "attention output", "attn_post": "attention output",
          "attn_z": "attention output", "mlp": "mlp output", "mlp_post": "mlp output",
          "resid": "block output", "embed": "embedding", "token_embed": "embedding"}


def is_post_norm_model(model: str | None) -> bool:
    return bool(POST_NORM_MODELS.match(canonical_model(model) or ""))


def saelens_hook(md: dict, source: str) -> tuple[str, str, str | None]:
    """(our hook, the config's own name for it, input transform) for a sae-lens config."""
    raw = md.get("hook_name") or md.get("hook_point")
    if not raw:
        raise BadInputError(f"{source}: sae-lens config names no hook_name")
    if md.get("hook_head_index") is not None:
        raise BadInputError(f"{source}: hook '{raw}' reads one attention head "
                            "(hook_head_index), which has no equivalent among our hook points")
    post = is_post_norm_model(md.get("model_name"))
    kind, layer = split_hook(translate_hook(raw))
    if post and kind in ("attn", "mlp") and re.search(r"\.hook_(attn|mlp)_out$", raw):
        kind = f"{kind}_post"  # TransformerLens reads them after the post-norm there
    if md.get("reshape_activations") == "hook_z" and kind != "attn_z":
        raise BadInputError(f"{source}: reshape_activations='hook_z' on hook '{raw}', which "
                            "is not an attention hook_z: refused rather than guessed")
    if kind == "mlp_in" and processed(md, "fold_ln"):
        kind = "mlp_normalized"  # with fold_ln, the MLP receives the normalised vector
    hook = kind if layer is None else f"{kind}.{layer}"
    hf = md.get("hf_hook_name")
    if hf:
        hook = _agreeing_module(hook, raw, hf, post, source)
    return hook, raw, transform_for(split_hook(hook)[0], md)


def _agreeing_module(hook: str, raw: str, hf: str, post: bool, source: str) -> str:
    module = translate_hf_point(hf, post)
    (kind, layer), (hf_kind, hf_layer) = split_hook(hook), split_hook(module)
    if layer != hf_layer or _PLACE.get(kind) != _PLACE.get(hf_kind):
        raise BadInputError(f"{source}: hook_name '{raw}' ({hook}) and hf_hook_name '{hf}' "
                            f"({module}) name different activations: refused rather than guessed")
    return module


def transform_for(kind: str, md: dict) -> str | None:
    """What TransformerLens's processing did to the activation at our hook kind."""
    if kind == "attn_z":
        return "fold_value_biases" if processed(md, "fold_value_biases") else None
    if kind in ("mlp_in", "mlp_normalized"):
        return None  # a norm's output does not depend on the centring of its input
    return input_transform(md)


def processed(md: dict, flag: str) -> bool:
    """Whether the model was loaded with TransformerLens's weight processing `flag` on: the
    recorded loading kwargs say (passed to from_pretrained_no_processing, so off unless set);
    without them, a config older than sae-lens 4 used from_pretrained, which processes."""
    if (md.get("model_class_name") or "HookedTransformer") != "HookedTransformer":
        return False
    kwargs = md.get("model_from_pretrained_kwargs")
    if isinstance(kwargs, dict):
        return bool(kwargs.get(flag))
    # sae-lens fills a missing sae_lens_version with its own when it loads a config, but
    # keeps a pre-6.0 config's training version as None: trust the training version first.
    key = "sae_lens_training_version" if "sae_lens_training_version" in md else "sae_lens_version"
    version = md.get(key)
    try:
        recent = version is not None and Version(str(version)) >= Version("4")
    except InvalidVersion:
        recent = False
    return not recent


def input_transform(md: dict) -> str | None:
    """"center" when the SAE read a TransformerLens residual stream with centred writing
    weights, which differs from Hugging Face's hidden states by the per-position mean.

    sae-lens records the model's loading kwargs in `model_from_pretrained_kwargs` since
    September 2024, when it also switched training to `from_pretrained_no_processing`
    (no centring unless the kwargs ask for it). A config without them was made before that,
    by `HookedTransformer.from_pretrained`, whose default centres writing weights, unless
    its sae-lens version (>= 4) says it is newer."""
    if any(f in str(md.get("model_name") or "").lower() for f in RMSNORM_FAMILIES):
        return None
    return "center" if processed(md, "center_writing_weights") else None
