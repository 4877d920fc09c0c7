"""Hook points inside a block's sublayers, each read with a forward hook on a Hugging Face module
(found by autointerp/harvest/modules.py):

    attn_z.L          the attention heads' outputs before the output projection, side by side
                      (n_heads * d_head; grouped-query attention has n_heads query heads): the
                      input of o_proj / c_proj / dense. TransformerLens's `blocks.L.attn.hook_z`
                      flattened, as sae-lens's `reshape_activations="hook_z"` does
    mlp_in.L          what block L's MLP module receives: its pre-MLP norm's output, weight and
                      bias applied (sparsify's `layers.L.mlp` transcoders; `blocks.L.mlp.hook_in`)
    mlp_normalized.L  that norm's input normalised, before its weight and bias (TransformerLens's
                      `blocks.L.ln2.hook_normalized`, with or without fold_ln)
    attn_post.L       the attention / MLP output after the block's post-norm, which is what it adds
    mlp_post.L        to the residual stream (Gemma 2/3, OLMo 2): TransformerLens's hook_attn_out /
                      hook_mlp_out in those families
    token_embed       the token embedding module's output alone (`hook_embed`): GPT-2's without
                      positional embeddings, Gemma's already scaled by sqrt(d_model)

`how_read` says in words what each reads; it is recorded in the store and shown by `inspect`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from autointerp.errors import BadInputError
from autointerp.harvest.hook_names import Hook
from autointerp.harvest.modules import (
    attn_norm,
    child,
    find_blocks,
    in_features,
    is_post_norm,
    mlp_norm,
    normalized,
    out_proj,
    post_norm,
)

SUBLAYER_KINDS = ("attn_z", "mlp_in", "mlp_normalized", "attn_post", "mlp_post", "token_embed")


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else next(iter(kwargs.values()))


def _main(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def module_for(model: nn.Module, hook: Hook) -> nn.Module:
    """The module the hook point is read at (its input for attn_z and mlp_in)."""
    if hook.kind == "token_embed":
        return model.get_input_embeddings()
    block = find_blocks(model)[hook.layer]
    if hook.kind == "attn_z":
        return out_proj(block)
    if hook.kind == "mlp_in":
        return child(block, "mlp")
    if hook.kind == "mlp_normalized":
        return mlp_norm(block)
    return post_norm(block, hook.kind.removesuffix("_post"))


def hook_width(model: nn.Module, hook: Hook, d_model: int) -> int:
    """Width of the activation stored for the hook point (attn_z: n_heads * d_head)."""
    return in_features(module_for(model, hook)) if hook.kind == "attn_z" else d_model


def register(model: nn.Module, hook: Hook, put: Callable[[torch.Tensor], None]) -> list:
    """Hooks that hand the hook point's activation to `put` (which may stop the forward pass)."""
    module = module_for(model, hook)
    if hook.kind in ("attn_z", "mlp_in"):
        return [module.register_forward_pre_hook(
            lambda _m, args, kwargs: put(_first_input(args, kwargs)), with_kwargs=True)]
    if hook.kind == "mlp_normalized":
        return _register_normalized(find_blocks(model)[hook.layer], module, put)
    return [module.register_forward_hook(lambda _m, _i, output: put(_main(output)))]


def _register_normalized(block: nn.Module, norm: nn.Module, put) -> list:
    """Reads the norm's input, and checks on every batch that the MLP receives the norm's own
    output: a family that changes it in between is refused rather than read wrongly."""
    seen: dict[str, torch.Tensor] = {}

    def take(_module, args, output):
        seen["x"], seen["out"] = args[0], _main(output)

    def check(_module, args, kwargs):
        if not torch.equal(_first_input(args, kwargs), seen["out"]):
            raise BadInputError(f"the MLP of {type(block).__name__} does not receive its norm's "
                                "output unchanged, so mlp_normalized cannot be read there")
        put(normalized(norm, seen["x"]))
    return [norm.register_forward_hook(take),
            child(block, "mlp").register_forward_pre_hook(check, with_kwargs=True)]


def register_replacement(model: nn.Module, hook: Hook, fn) -> list:
    """Hooks that put fn(activation) in place of the hook point's activation."""
    module = module_for(model, hook)
    if hook.kind in ("attn_z", "mlp_in"):
        def swap_input(_module, args, kwargs):
            if args:
                return (fn(args[0]),) + args[1:], kwargs
            first = next(iter(kwargs))
            return args, {**kwargs, first: fn(kwargs[first])}
        return [module.register_forward_pre_hook(swap_input, with_kwargs=True)]
    if hook.kind == "mlp_normalized":
        raise BadInputError("mlp_normalized cannot be replaced (the norm's weight and bias come "
                            "after it): measure a dictionary at mlp_in instead")

    def swap_output(_module, _inputs, output):
        return (fn(output[0]),) + output[1:] if isinstance(output, tuple) else fn(output)
    return [module.register_forward_hook(swap_output)]


def check_supported(model: nn.Module, hook: Hook, model_name: str) -> None:
    """One-line errors before a harvest starts, not mid-way."""
    module_for(model, hook)
    if hook.kind in ("attn_post", "mlp_post") and not is_post_norm(find_blocks(model)[hook.layer]):
        raise BadInputError(f"{model_name} has no post-norms: use {hook.kind[:-5]}.{hook.layer}")


def how_read(model: nn.Module, hook: Hook) -> str:
    """In words: the module path, input or output, pre or post norm, any reshape."""
    names = {m: n for n, m in model.named_modules()}
    path = names.get(module_for(model, hook), "?")
    return {
        "attn_z": f"input of {path}: the heads' outputs before the output projection, "
                  "flattened to n_heads x d_head",
        "mlp_in": f"input of {path}: what the MLP receives, after its norm's weight and bias",
        "mlp_normalized": f"input of {path} normalised, before the norm's weight and bias",
        "attn_post": f"output of {path}: the attention output after the post-attention norm",
        "mlp_post": f"output of {path}: the MLP output after the post-MLP norm",
        "token_embed": f"output of {path}: the token embedding alone (no positional "
                       "embedding; any scaling the module applies included)",
    }[hook.kind]


def folded_value_bias(model: nn.Module, layer: int, device) -> torch.Tensor:
    """What TransformerLens's fold_value_biases (with fold_ln) moves out of block `layer`'s
    hook_z: the heads' outputs when every value vector is the value of the attention norm's
    bias (zero when it has none). Attention weights sum to 1, so that is the constant
    (n_heads * d_head,) vector subtracted; computed by one forward pass on two tokens in which
    the attention reads that bias at every position. Kept on the model: it never changes."""
    cache = model.__dict__.setdefault("_autointerp_value_bias", {})
    if layer in cache:
        return cache[layer]
    block = find_blocks(model)[layer]
    norm = attn_norm(block)
    bias = getattr(norm, "bias", None) if norm is not None else None
    box: dict[str, torch.Tensor] = {}

    def constant_input(_module, args, kwargs):
        x = _first_input(args, kwargs)
        b = torch.zeros_like(x) if bias is None else bias.to(x.dtype).expand_as(x)
        return ((b,) + args[1:], kwargs) if args else (args, {**kwargs, "hidden_states": b})

    def take(_module, args, kwargs):
        box["z"] = _first_input(args, kwargs)
        raise _Stop

    handles = [child(block, "attn").register_forward_pre_hook(constant_input, with_kwargs=True),
               out_proj(block).register_forward_pre_hook(take, with_kwargs=True)]
    try:
        with torch.inference_mode():
            model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=device), use_cache=False)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    cache[layer] = box["z"][0, -1].clone()
    return cache[layer]


class _Stop(Exception):
    pass
