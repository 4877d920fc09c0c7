"""Hook points: which activation inside a decoder block to read (harvest) or replace (loss
recovered), found generically so any Hugging Face causal LM works without a table of names.

    resid.L  the hidden state that block L outputs, i.e. HF `output_hidden_states[L + 1]`
             (for the last block HF applies the final norm there; we keep the raw block output)
    mlp.L    the output of block L's MLP submodule, before it is added to the residual stream
    attn.L   the output of block L's attention submodule, likewise

A bare integer L means resid.L. Layers count from 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from autointerp.errors import BadInputError

if TYPE_CHECKING:
    from autointerp.harvest.models import LoadedModel

HOOK_KINDS = ("resid", "mlp", "attn")
# Child-module names that mark a block's MLP / attention in the families we know (GPT-2 `mlp`,
# `attn`; GPT-NeoX `mlp`, `attention`; Llama `mlp`, `self_attn`). Norms named like
# `post_attention_layernorm` also match, so the match with the most parameters wins.
_CHILD_KEYS = {"mlp": ("mlp", "feed_forward", "ffn"), "attn": ("attn", "attention")}


@dataclass(frozen=True)
class Hook:
    kind: str
    """resid | mlp | attn"""
    layer: int
    """Decoder block index, from 0."""

    @property
    def name(self) -> str:
        return f"{self.kind}.{self.layer}"


def parse_hook(spec: str | int, n_layers: int, model_name: str = "the model") -> Hook:
    """`resid.15`, `mlp.3`, `attn.0` or a bare layer number (resid)."""
    text = str(spec).strip()
    kind, _, layer_text = text.rpartition(".") if "." in text else ("resid", "", text)
    if kind not in HOOK_KINDS:
        raise BadInputError(f"unknown hook point '{text}': use resid.L, mlp.L or attn.L")
    try:
        layer = int(layer_text)
    except ValueError:
        raise BadInputError(f"hook point '{text}' needs an integer layer, e.g. {kind}.3") from None
    if not 0 <= layer < n_layers:
        raise BadInputError(f"layer {layer} is out of range: {model_name} has layers 0..{n_layers - 1}")
    return Hook(kind, layer)


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks: the first ModuleList as long as the config's layer count."""
    n_layers = model.config.get_text_config().num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise BadInputError(f"cannot find the decoder blocks of {type(model).__name__}: "
                        f"no module list of num_hidden_layers={n_layers} modules")


def hook_module(model: nn.Module, hook: Hook) -> nn.Module:
    """The module whose forward output is the hook point's activation."""
    block = find_blocks(model)[hook.layer]
    if hook.kind == "resid":
        return block
    keys = _CHILD_KEYS[hook.kind]
    matches = [(sum(p.numel() for p in child.parameters()), name, child)
               for name, child in block.named_children() if any(k in name.lower() for k in keys)]
    if not matches:
        children = ", ".join(name for name, _ in block.named_children())
        raise BadInputError(f"cannot find the {hook.kind} submodule of {type(block).__name__} "
                            f"(children: {children}); use a resid hook point")
    return max(matches, key=lambda m: m[0])[2]


class _StopForward(Exception):
    """Raised from a hook to skip the layers after the one we read."""


def _main_output(output) -> torch.Tensor:
    # Blocks and attention modules may return (hidden, attn_weights, ...) tuples.
    return output[0] if isinstance(output, tuple) else output


def capture(loaded: LoadedModel, hook: Hook, input_ids: torch.Tensor,
            attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Run the model up to the hooked module and return its activation, (batch, seq, d_model).
    The forward stops there, so later blocks cost nothing."""
    box: list[torch.Tensor] = []

    def record(_module, _inputs, output):
        box.append(_main_output(output))
        raise _StopForward

    handle = hook_module(loaded.model, hook).register_forward_hook(record)
    try:
        with torch.inference_mode():
            loaded.model(input_ids=input_ids.to(loaded.device), use_cache=False,
                         attention_mask=None if attention_mask is None
                         else attention_mask.to(loaded.device))
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not box:
        raise RuntimeError(f"hook point {hook.name} was never reached in the forward pass")
    return box[0]


def forward_with_replacement(loaded: LoadedModel, hook: Hook, input_ids: torch.Tensor,
                             attention_mask: torch.Tensor | None,
                             replace: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Logits (batch, seq, vocab) of a full forward in which the hook point's activation
    (batch, seq, d_model) is replaced by `replace(activation)` (e.g. an SAE reconstruction)."""

    def swap(_module, _inputs, output):
        if isinstance(output, tuple):
            return (replace(output[0]),) + output[1:]
        return replace(output)

    handle = hook_module(loaded.model, hook).register_forward_hook(swap)
    try:
        with torch.inference_mode():
            out = loaded.model(input_ids=input_ids.to(loaded.device), use_cache=False,
                               attention_mask=None if attention_mask is None
                               else attention_mask.to(loaded.device))
    finally:
        handle.remove()
    return out.logits
