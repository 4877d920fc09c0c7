"""Hook points: which activation inside a decoder block to read (harvest) or replace (loss
recovered), found generically so any Hugging Face causal LM works without a table of names.

    embed        the input of block 0: the embedding output, positional embeddings included
                 (GPT-2); TransformerLens's `blocks.0.hook_resid_pre`
    resid.L      the hidden state that block L outputs, i.e. HF `output_hidden_states[L + 1]`
                 (for the last block HF applies the final norm there; we keep the raw block output)
    resid_mid.L  block L's residual stream after attention, before the MLP: block input +
                 attention output (see `_capture_resid_mid` for how this is checked)
    mlp.L        the output of block L's MLP submodule, before it is added to the residual stream
    attn.L       the output of block L's attention submodule, likewise

A bare integer L means resid.L. Layers count from 0. Other tools' names (TransformerLens,
sae-lens, sparsify) are translated into these by autointerp/harvest/hook_names.py.

An input transform is applied to the captured activation: `center` subtracts each position's
mean over d_model. TransformerLens's default weight processing (center_writing_weights, which
it applies to LayerNorm models only) makes its residual stream, attention and MLP outputs
exactly the Hugging Face ones minus that mean, so an SAE trained on them needs the same
transform at harvest; for RMSNorm models `center` is a no-op, as in TransformerLens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from autointerp.errors import BadInputError
from autointerp.harvest import sublayers
from autointerp.harvest.hook_names import (  # re-exported: hook points are used from here
    HOOK_KINDS,
    INPUT_TRANSFORMS,
    LAYER_KINDS,
    Hook,
    check_input_transform,
    parse_hook,
    resolve_hook_name,
)
from autointerp.harvest.modules import child as _child
from autointerp.harvest.modules import find_blocks, is_post_norm, post_norm
from autointerp.harvest.transforms import (  # re-exported: used from here
    apply_input_transform,
    effective_transform,
    transform_activation,
    transform_offset,
    uses_layernorm,
)

__all__ = ["HOOK_KINDS", "INPUT_TRANSFORMS", "LAYER_KINDS", "Hook", "apply_input_transform",
           "capture", "check_hook_supported", "check_input_transform", "effective_transform",
           "find_blocks", "transform_activation", "forward_with_replacement", "hook_module", "parse_hook",
           "resolve_hook_name", "uses_layernorm"]

if TYPE_CHECKING:
    from autointerp.harvest.models import LoadedModel

# Config flags and model types whose blocks run attention and MLP side by side on the same
# input (x + attn(x) + mlp(x)): there is no residual stream between the two.
_PARALLEL_FLAGS = ("use_parallel_residual", "parallel_attn", "parallel_residual")
_PARALLEL_TYPES = ("gptj", "phi", "cohere", "cohere2", "codegen", "gpt_neox_japanese")


def hook_module(model: nn.Module, hook: Hook) -> nn.Module:
    """The module whose forward output is the hook point's activation (resid, mlp, attn), or
    whose input it is (embed: block 0), or the block that holds it (resid_mid)."""
    if hook.kind in sublayers.SUBLAYER_KINDS:
        return sublayers.module_for(model, hook)
    blocks = find_blocks(model)
    if hook.kind == "embed":
        return blocks[0]
    block = blocks[hook.layer]
    return block if hook.kind in ("resid", "resid_mid") else _child(block, hook.kind)


# Hook points whose activation is a module's forward output, which a forward hook can read or
# replace on its own (what the causal tools do); the others are inputs or sums.
OUTPUT_KINDS = ("resid", "mlp", "attn", "attn_post", "mlp_post", "token_embed")


def output_module(model: nn.Module, hook: Hook) -> nn.Module:
    """The module whose forward output is the hook point's activation, or a one-line refusal."""
    if hook.kind not in OUTPUT_KINDS:
        raise BadInputError(f"{hook.name} is not a module's output ({', '.join(OUTPUT_KINDS)} "
                            "are): it cannot be edited or read this way")
    return hook_module(model, hook)


def check_hook_supported(model: nn.Module, hook: Hook, model_name: str = "the model") -> None:
    """BadInputError when the family has no such point: resid_mid in a parallel-attention block,
    post-norm outputs in a family without post-norms, a module not found."""
    if hook.kind in sublayers.SUBLAYER_KINDS:
        sublayers.check_supported(model, hook, model_name)
        return
    if hook.kind != "resid_mid":
        return
    config = model.config.get_text_config()
    flags = [f for f in _PARALLEL_FLAGS if getattr(config, f, False) is True]
    if flags or getattr(config, "model_type", None) in _PARALLEL_TYPES:
        why = flags[0] if flags else f"model type {config.model_type}"
        raise BadInputError(f"{model_name} runs attention and MLP in parallel ({why}), so it has no "
                            f"{hook.name} (no residual stream between them); use resid, attn or mlp")
    block = find_blocks(model)[hook.layer]
    _added(block, "attn"), _added(block, "mlp")  # one-line errors now, not mid-harvest


def how_read(model: nn.Module, hook: Hook) -> str:
    """In words: which module, its input or output, pre or post norm, any reshape (recorded in
    the store's metadata, shown by `inspect`)."""
    if hook.kind in sublayers.SUBLAYER_KINDS:
        return sublayers.how_read(model, hook)
    names = {m: n for n, m in model.named_modules()}
    path = names.get(hook_module(model, hook), "?")
    return {"embed": f"input of {path}: the embedding output, positional embeddings included",
            "resid": f"output of {path}: the residual stream after the block",
            "resid_mid": f"input of {path} plus its attention output: the residual stream "
                         "between attention and MLP",
            "mlp": f"output of {path}: the MLP's own output, before any post-norm",
            "attn": f"output of {path}: the attention's own output, before any post-norm",
            }[hook.kind]


class _StopForward(Exception):
    """Raised from a hook to skip the layers after the one we read."""


def _main_output(output) -> torch.Tensor:
    # Blocks and attention modules may return (hidden, attn_weights, ...) tuples.
    return output[0] if isinstance(output, tuple) else output


def _block_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden states a decoder block is called with (positionally in every HF family
    we know; by keyword in some)."""
    return args[0] if args else kwargs["hidden_states"]


def _run(loaded: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
    with torch.inference_mode():
        return loaded.model(input_ids=input_ids.to(loaded.device), use_cache=False,
                            attention_mask=None if attention_mask is None
                            else attention_mask.to(loaded.device))


def _stop() -> None:
    raise _StopForward


def _register_capture(model: nn.Module, hook: Hook, box: dict, key: str = "act",
                      done: Callable[[], None] = _stop) -> list:
    """Hooks that put the activation in box[key], then call `done` (by default: stop the
    forward pass; a multi-hook capture stops once every hook point has been read)."""
    if hook.kind in sublayers.SUBLAYER_KINDS:
        def put(value: torch.Tensor) -> None:
            box[key] = value
            done()
        return sublayers.register(model, hook, put)
    blocks = find_blocks(model)
    if hook.kind == "embed":
        def take_input(_module, args, kwargs):
            box[key] = _block_input(args, kwargs)
            done()
        return [blocks[0].register_forward_pre_hook(take_input, with_kwargs=True)]
    if hook.kind == "resid_mid":
        return _capture_resid_mid(blocks[hook.layer], box, key, done)

    def take_output(_module, _inputs, output):
        box[key] = _main_output(output)
        done()
    return [hook_module(model, hook).register_forward_hook(take_output)]


def _capture_resid_mid(block: nn.Module, box: dict, key: str = "act",
                       done: Callable[[], None] = _stop) -> list:
    """resid_mid = block input + attention output, as GPT-2, Llama and sequential GPT-NeoX add
    them (Gemma 2/3 and OLMo 2: the output of the post-attention norm). Every batch also checks
    that the block's output is exactly that plus the MLP's (post-normed) output: a family that
    scales the outputs before adding them fails the check and is refused, not read wrongly."""
    parts: dict[str, torch.Tensor] = {}

    def take_input(_module, args, kwargs):
        parts["x"] = _block_input(args, kwargs)

    def take(name):
        def hook(_module, _inputs, output):
            parts[name] = _main_output(output)
        return hook

    def finish(_module, _inputs, output):
        mid = parts["x"] + parts["attn"]
        expected, got = (mid + parts["mlp"]).float(), _main_output(output).float()
        tol = 1e-4 if got.dtype == parts["x"].dtype == torch.float32 else 2e-2
        if (got - expected).abs().max() > tol * got.abs().max().clamp(min=1e-6):
            raise BadInputError(f"{type(block).__name__} does not add its attention and MLP outputs "
                                "to the residual stream unchanged, so resid_mid cannot be read "
                                "there; use resid, attn or mlp")
        box[key] = mid
        done()

    return [block.register_forward_pre_hook(take_input, with_kwargs=True),
            _added(block, "attn").register_forward_hook(take("attn")),
            _added(block, "mlp").register_forward_hook(take("mlp")),
            block.register_forward_hook(finish)]


def _added(block: nn.Module, kind: str) -> nn.Module:
    """The module whose output the block adds to the residual stream: the sublayer itself, or
    its post-norm in Gemma 2/3 and OLMo 2 (as TransformerLens's hook_resid_mid there)."""
    return post_norm(block, kind) if is_post_norm(block) else _child(block, kind)


def capture_many(loaded: LoadedModel, hooks: list[Hook], input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """{hook name: (batch, seq, d_model) activation} from one forward pass, which stops as
    soon as the last of them has fired, so later blocks cost nothing."""
    found: dict[str, torch.Tensor] = {}

    def done() -> None:
        if len(found) == len(hooks):
            raise _StopForward

    handles = [h for hook in hooks for h in _register_capture(loaded.model, hook, found, hook.name, done)]
    try:
        _run(loaded, input_ids, attention_mask)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [h.name for h in hooks if h.name not in found]
    if missing:
        raise RuntimeError(f"hook points {', '.join(missing)} were never reached in the forward pass")
    return found


def capture(loaded: LoadedModel, hook: Hook, input_ids: torch.Tensor,
            attention_mask: torch.Tensor | None = None,
            input_transform: str | None = None) -> torch.Tensor:
    """One hook point's activation, (batch, seq, d_model), with `input_transform` applied."""
    act = capture_many(loaded, [hook], input_ids, attention_mask)[hook.name]
    return transform_activation(loaded.model, hook, act, input_transform)


def _with_transform(model: nn.Module, hook: Hook, replace: Callable[[torch.Tensor], torch.Tensor],
                    transform: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """`replace` sees the activation as the store holds it (transformed); the model gets it
    back untransformed. For `center` the mean is added back: every LayerNorm downstream
    removes it again, so this is exactly TransformerLens's processed model."""
    if transform is None:
        return replace
    if transform == "fold_value_biases":  # measured now: it runs the model, which must not
        sublayers.folded_value_bias(model, hook.layer, next(model.parameters()).device)  # nest

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        offset = transform_offset(model, hook, x, transform)
        return replace(x - offset) + offset
    return wrapped


def _swap_output(fn):
    def swap(_module, _inputs, output):
        if isinstance(output, tuple):
            return (fn(output[0]),) + output[1:]
        return fn(output)
    return swap


def _register_replacement(model: nn.Module, hook: Hook, fn) -> list:
    if hook.kind in sublayers.SUBLAYER_KINDS:
        return sublayers.register_replacement(model, hook, fn)
    blocks = find_blocks(model)
    if hook.kind == "embed":
        def swap_input(_module, args, kwargs):
            if args:
                return (fn(args[0]),) + args[1:], kwargs
            return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}
        return [blocks[0].register_forward_pre_hook(swap_input, with_kwargs=True)]
    if hook.kind != "resid_mid":
        return [hook_module(model, hook).register_forward_hook(_swap_output(fn))]
    # resid_mid = x + attn: an attention output of fn(x + attn) - x puts fn(resid_mid) into the
    # residual stream, and so into the MLP and every later block.
    block, parts = blocks[hook.layer], {}

    def take_input(_module, args, kwargs):
        parts["x"] = _block_input(args, kwargs)

    def new_attn(a: torch.Tensor) -> torch.Tensor:
        return fn(parts["x"] + a) - parts["x"]
    return [block.register_forward_pre_hook(take_input, with_kwargs=True),
            _added(block, "attn").register_forward_hook(_swap_output(new_attn))]


def forward_with_replacement(loaded: LoadedModel, hook: Hook, input_ids: torch.Tensor,
                             attention_mask: torch.Tensor | None,
                             replace: Callable[[torch.Tensor], torch.Tensor],
                             input_transform: str | None = None) -> torch.Tensor:
    """Logits (batch, seq, vocab) of a full forward in which the hook point's activation
    (batch, seq, d_model) is replaced by `replace(activation)` (e.g. an SAE reconstruction),
    `replace` seeing it with `input_transform` applied, as the store holds it."""
    fn = _with_transform(loaded.model, hook, replace,
                         effective_transform(loaded.model, input_transform, hook))
    handles = _register_replacement(loaded.model, hook, fn)
    try:
        out = _run(loaded, input_ids, attention_mask)
    finally:
        for handle in handles:
            handle.remove()
    return out.logits
