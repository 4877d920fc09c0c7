"""Input transforms: what a store holds at a hook point, relative to the model's own
activation. `center` is TransformerLens's center_writing_weights (LayerNorm models only, and
only what is written into the residual stream); `fold_value_biases` is its fold_value_biases,
which moves a constant out of attn_z (autointerp/harvest/sublayers.py measures it)."""

from __future__ import annotations

import torch
from torch import nn

from autointerp.harvest import sublayers
from autointerp.harvest.hook_names import Hook
from autointerp.harvest.modules import find_blocks


def uses_layernorm(model: nn.Module) -> bool:
    """Whether the decoder blocks normalise with LayerNorm (GPT-2, GPT-NeoX), not RMSNorm."""
    return any(isinstance(m, nn.LayerNorm) for m in find_blocks(model)[0].modules())


# Hook points whose activation is written into the residual stream, which TransformerLens's
# center_writing_weights centres (LayerNorm models only).
_WRITERS = ("embed", "token_embed", "resid", "resid_mid", "mlp", "attn", "attn_post", "mlp_post")


def effective_transform(model: nn.Module, transform: str | None,
                        hook: Hook | None = None) -> str | None:
    """What `transform` does at `hook` (any hook when None). `center` stands for
    TransformerLens's center_writing_weights, which TransformerLens applies to LayerNorm models
    only (an RMSNorm does not remove the mean, so centring would change the function), and
    only to what is written into the residual stream; `fold_value_biases` changes attn_z only."""
    if transform == "center":
        writes = hook is None or hook.kind in _WRITERS
        return transform if writes and uses_layernorm(model) else None
    if transform == "fold_value_biases":
        return transform if hook is None or hook.kind == "attn_z" else None
    return None


def transform_offset(model: nn.Module, hook: Hook, acts: torch.Tensor, transform: str | None):
    """What the transform subtracts from `acts` (batch, seq, width), or None."""
    if transform == "center":
        return acts.mean(dim=-1, keepdim=True)
    if transform == "fold_value_biases":
        return sublayers.folded_value_bias(model, hook.layer, acts.device).to(acts.dtype)
    return None


def transform_activation(model: nn.Module, hook: Hook, acts: torch.Tensor,
                         transform: str | None) -> torch.Tensor:
    """The activation as a store holds it: `transform`, where it applies at `hook`, applied."""
    offset = transform_offset(model, hook, acts, effective_transform(model, transform, hook))
    return acts if offset is None else acts - offset


def apply_input_transform(acts: torch.Tensor, transform: str | None) -> torch.Tensor:
    """(..., d_model) -> same shape; `center` subtracts each position's mean over d_model."""
    if transform is None:
        return acts
    return acts - acts.mean(dim=-1, keepdim=True)
