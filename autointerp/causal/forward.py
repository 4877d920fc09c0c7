"""One forward pass with edits at some hook points, returning the logits or one hook
point's activation (the pass then stops there). Plain forward hooks on the Hugging Face
modules (harvest/hooks.py finds them); gradients flow when asked, for attribution."""

from __future__ import annotations

from collections.abc import Callable

import torch

from autointerp.harvest.hooks import Hook, hook_module
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


def run(loaded: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        edits: dict[Hook, Edit] | None = None, read: Hook | None = None,
        grad: bool = False) -> torch.Tensor:
    """Logits (batch, seq, vocab), or with `read` the (batch, seq, d_model) activation there
    (after any edit at the same hook point)."""
    model, box, handles = loaded.model, [], []

    def record(_module, _inputs, output):
        box.append(_main(output))
        raise _Stop

    try:
        for hook, edit in (edits or {}).items():
            handles.append(hook_module(model, hook).register_forward_hook(_swap(edit)))
        if read is not None:
            handles.append(hook_module(model, read).register_forward_hook(record))
        with torch.set_grad_enabled(grad):
            out = model(input_ids=input_ids.to(loaded.device), use_cache=False,
                        attention_mask=attention_mask.to(loaded.device))
    except _Stop:
        return box[0]
    finally:
        for h in handles:
            h.remove()
    return out.logits
