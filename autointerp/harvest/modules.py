"""Finding the Hugging Face modules a hook point is read from, generically, so that any causal
LM works without a table of names: the decoder blocks, a block's attention and MLP, the
attention's output projection, the norm in front of the MLP and the post-norms of the families
that normalise a sublayer's output before adding it (Gemma 2 and 3, OLMo 2).

Anything not found is refused in one line that names the block's children.
"""

from __future__ import annotations

import torch
from torch import nn

from autointerp.errors import BadInputError

# Child-module names that mark a block's MLP / attention in the families we know (GPT-2 `mlp`,
# `attn`; GPT-NeoX `mlp`, `attention`; Llama `mlp`, `self_attn`). Norms named like
# `post_attention_layernorm` also match, so the match with the most parameters wins.
_CHILD_KEYS = {"mlp": ("mlp", "feed_forward", "ffn"), "attn": ("attn", "attention")}
# The attention's output projection: Llama/Gemma/OLMo `o_proj`, GPT-2 `c_proj`, GPT-NeoX `dense`.
_OUT_PROJ = ("o_proj", "c_proj", "dense", "out_proj")
# The norm whose output the MLP receives. `post_attention_layernorm` is that norm in pre-norm
# families (Llama, GPT-NeoX) but the attention's post-norm where `post_feedforward_layernorm`
# exists (Gemma 2/3, OLMo 2): there only `pre_feedforward_layernorm` is (OLMo 2 has none).
_MLP_NORMS = ("pre_feedforward_layernorm", "ln_2")
_PRE_NORM_MLP_NORM = "post_attention_layernorm"
_ATTN_NORMS = ("input_layernorm", "ln_1")
POST_NORMS = {"attn": "post_attention_layernorm", "mlp": "post_feedforward_layernorm"}


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks: the first ModuleList as long as the config's layer count."""
    n_layers = model.config.get_text_config().num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise BadInputError(f"cannot find the decoder blocks of {type(model).__name__}: "
                        f"no module list of num_hidden_layers={n_layers} modules")


def _children(block: nn.Module) -> str:
    return ", ".join(name for name, _ in block.named_children())


def child(block: nn.Module, kind: str) -> nn.Module:
    """Block's attention (`attn`) or MLP (`mlp`) submodule."""
    keys = _CHILD_KEYS[kind]
    matches = [(sum(p.numel() for p in c.parameters()), name, c)
               for name, c in block.named_children() if any(k in name.lower() for k in keys)]
    if not matches:
        raise BadInputError(f"cannot find the {kind} submodule of {type(block).__name__} "
                            f"(children: {_children(block)}); use a resid hook point")
    return max(matches, key=lambda m: m[0])[2]


def is_post_norm(block: nn.Module) -> bool:
    """Whether the block normalises its sublayers' outputs before adding them (Gemma 2/3, OLMo 2)."""
    return isinstance(getattr(block, POST_NORMS["mlp"], None), nn.Module)


def post_norm(block: nn.Module, kind: str) -> nn.Module:
    """The post-attention (`attn`) or post-MLP (`mlp`) norm of a post-norm block."""
    norm = getattr(block, POST_NORMS[kind], None) if is_post_norm(block) else None
    if not isinstance(norm, nn.Module):
        raise BadInputError(f"{type(block).__name__} has no post-{kind} norm (children: "
                            f"{_children(block)}): its {kind} output is {kind}.L")
    return norm


def mlp_norm(block: nn.Module) -> nn.Module:
    """The norm whose output the MLP receives (GPT-2 `ln_2`, Llama `post_attention_layernorm`,
    Gemma 2 `pre_feedforward_layernorm`)."""
    names = _MLP_NORMS if is_post_norm(block) else _MLP_NORMS + (_PRE_NORM_MLP_NORM,)
    for name in names:
        if isinstance(getattr(block, name, None), nn.Module):
            return getattr(block, name)
    raise BadInputError(f"cannot find the norm in front of the MLP of {type(block).__name__} "
                        f"(children: {_children(block)}), so its normalised MLP input cannot be read")


def attn_norm(block: nn.Module) -> nn.Module | None:
    """The norm whose output the attention receives, None when it reads the residual stream."""
    for name in _ATTN_NORMS:
        if isinstance(getattr(block, name, None), nn.Module):
            return getattr(block, name)
    return None


def out_proj(block: nn.Module) -> nn.Module:
    """The attention's output projection, whose input is the heads' outputs side by side."""
    attn = child(block, "attn")
    for name in _OUT_PROJ:
        if isinstance(getattr(attn, name, None), nn.Module):
            return getattr(attn, name)
    raise BadInputError(f"cannot find the output projection of {type(attn).__name__} (children: "
                        f"{_children(attn)}), so its heads' outputs (attn_z) cannot be read")


def in_features(linear: nn.Module) -> int:
    """Input width of nn.Linear, or of transformers' Conv1D (GPT-2: weight is (in, out))."""
    if isinstance(linear, nn.Linear):
        return linear.in_features
    return int(linear.weight.shape[0])


def normalized(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The norm's input normalised, before its weight and bias, in float32 (TransformerLens's
    `hook_normalized`): LayerNorm (x - mean) / sqrt(var + eps), RMSNorm x / sqrt(mean(x^2) + eps)."""
    x = x.float()
    if isinstance(norm, nn.LayerNorm):
        return nn.functional.layer_norm(x, x.shape[-1:], eps=norm.eps)
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
    if "rms" not in type(norm).__name__.lower() or eps is None:
        raise BadInputError(f"norm {type(norm).__name__} is neither a LayerNorm nor an RMSNorm "
                            "with an epsilon, so its normalised input cannot be read exactly")
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
