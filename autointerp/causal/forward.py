"""One forward pass with edits at some hook points, returning the logits or one hook
point's activation (the pass then stops there). Plain forward hooks on the Hugging Face
modules (harvest/hooks.py finds them); gradients flow when asked, for attribution.

Two savings for patching, where the same prompts run thousands of times: `positions` has
the output head compute logits only there (a 49k-token head costs a fifth of SmolLM2's
forward pass), and `start` skips the blocks before a residual hook point, whose output
is already known, by standing in for them (checked against a full pass before use).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from autointerp.harvest.hooks import Hook, find_blocks, output_module
from autointerp.harvest.models import LoadedModel

Edit = Callable[[torch.Tensor], torch.Tensor]


class _Stop(Exception):
    """Raised from the read hook: the layers after it are not needed."""


def _main(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _swap(edit: Edit):
    def hook(_module, _inputs, output):
        if isinstance(output, tuple):
            return (edit(output[0]),) + output[1:]
        return edit(output)
    return hook


class _Given(nn.Module):
    """Stands in for a decoder block: returns its input (blocks before the start) or a
    given tensor (the start block), in the block's own output type."""

    def __init__(self, output: torch.Tensor | None, as_tuple: bool):
        super().__init__()
        self.output, self.as_tuple = output, as_tuple

    def forward(self, hidden_states, *args, **kwargs):
        out = hidden_states if self.output is None else self.output
        return (out,) if self.as_tuple else out


@contextmanager
def _skipped(model: nn.Module, start: tuple[Hook, torch.Tensor, bool]):
    hook, x, as_tuple = start
    blocks = find_blocks(model)
    real = [blocks[i] for i in range(hook.layer + 1)]
    try:
        for i in range(hook.layer + 1):
            blocks[i] = _Given(x if i == hook.layer else None, as_tuple)
        yield
    finally:
        for i, block in enumerate(real):
            blocks[i] = block


@contextmanager
def _head_at(model: nn.Module, positions: torch.Tensor):
    handle = model.get_output_embeddings().register_forward_pre_hook(
        lambda _m, args: (args[0][:, positions.to(args[0].device)],) + tuple(args[1:]))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def edited(model: nn.Module, edits: dict[Hook, Edit]):
    """Every forward pass inside replaces each hook point's output x by edit(x) (patching
    for one pass; steering for each step of a generation)."""
    with ExitStack() as stack:
        for hook, edit in edits.items():
            stack.callback(output_module(model, hook).register_forward_hook(_swap(edit)).remove)
        yield


def run(loaded: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        edits: dict[Hook, Edit] | None = None, read: Hook | None = None, grad: bool = False,
        positions: torch.Tensor | None = None,
        start: tuple[Hook, torch.Tensor, bool] | None = None) -> torch.Tensor:
    """Logits (batch, seq or len(positions), vocab), or with `read` the (batch, seq, d_model)
    activation there (after any edit at the same hook point). `start` = (resid hook, its
    output (batch, seq, d_model), whether the block returns a tuple)."""
    model, box = loaded.model, []

    def record(_module, _inputs, output):
        box.append(_main(output))
        raise _Stop

    with ExitStack() as stack:
        if start is not None:
            stack.enter_context(_skipped(model, start))
        stack.enter_context(edited(model, edits or {}))
        if read is not None:
            stack.callback(output_module(model, read).register_forward_hook(record).remove)
        if positions is not None:
            stack.enter_context(_head_at(model, positions))
        try:
            with torch.set_grad_enabled(grad):
                out = model(input_ids=input_ids.to(loaded.device), use_cache=False,
                            attention_mask=attention_mask.to(loaded.device))
        except _Stop:
            return box[0]
    return out.logits


def returns_tuple(loaded: LoadedModel, hook: Hook, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor) -> bool:
    """Whether the hooked block returns a tuple (GPT-2) or a bare tensor (Llama in
    transformers 5), so a stand-in can answer the same way."""
    seen = []

    def look(_module, _inputs, output):
        seen.append(isinstance(output, tuple))
        raise _Stop

    handle = output_module(loaded.model, hook).register_forward_hook(look)
    try:
        with torch.no_grad():
            loaded.model(input_ids=input_ids[:1].to(loaded.device), use_cache=False,
                         attention_mask=attention_mask[:1].to(loaded.device))
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen[0]
