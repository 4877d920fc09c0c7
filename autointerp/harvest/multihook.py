"""Several hook points from one forward pass.

Each hook point's module comes from `hooks.hook_module`, as for a single-hook capture, so
every store of a multi-hook harvest holds exactly what a single-hook harvest of its hook
point holds. The forward stops as soon as the last of them has fired, so blocks after the
deepest hooked one cost nothing.
"""

from __future__ import annotations

import re
from dataclasses import asdict

import torch

from autointerp.errors import BadInputError
from autointerp.harvest.hooks import Hook, hook_module
from autointerp.harvest.models import LoadedModel


class _StopForward(Exception):
    """Raised from the last hook to fire: the rest of the model is not needed."""


def capture_many(loaded: LoadedModel, hooks: list[Hook], input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """{hook name: (batch, seq, d_model) activation} from one forward pass."""
    found: dict[str, torch.Tensor] = {}
    by_module: dict[int, list[Hook]] = {}
    modules = {}
    for hook in hooks:
        module = hook_module(loaded.model, hook)
        by_module.setdefault(id(module), []).append(hook)
        modules[id(module)] = module

    def recorder(names: list[str]):
        def record(_module, _inputs, output):
            value = output[0] if isinstance(output, tuple) else output
            for name in names:
                found[name] = value
            if len(found) == len(hooks):
                raise _StopForward
        return record

    handles = [modules[key].register_forward_hook(recorder([h.name for h in group]))
               for key, group in by_module.items()]
    try:
        with torch.inference_mode():
            loaded.model(input_ids=input_ids.to(loaded.device), use_cache=False,
                         attention_mask=None if attention_mask is None
                         else attention_mask.to(loaded.device))
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [h.name for h in hooks if h.name not in found]
    if missing:
        raise RuntimeError(f"hook points {', '.join(missing)} were never reached in the forward pass")
    return found


def parse_layers(spec: str) -> list[int]:
    """`0-5`, `0,2,4` or `0-2,7` -> sorted distinct layer numbers."""
    layers: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise BadInputError(f"--layers {spec!r}: use a range like 0-5, a list like 0,2,4, or both")
        layers.update(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    return sorted(layers)


def hook_points(hooks: str, layers: list[int]) -> list[tuple[str, int]]:
    """(kind, layer) pairs from a comma-separated `--hook` list: a kind (resid, mlp, attn)
    is taken at every layer of `layers`, a full hook point (mlp.3) as it is."""
    points: list[tuple[str, int]] = []
    for item in (h.strip() for h in hooks.split(",") if h.strip()):
        kind, dot, layer = item.rpartition(".")
        if dot:
            if not layer.isdigit():
                raise BadInputError(f"hook point {item!r} needs an integer layer, e.g. {kind}.3")
            points.append((kind, int(layer)))
        elif not layers:
            raise BadInputError(f"--hook {item} needs --layer or --layers (or write {item}.L)")
        else:
            points += [(item, layer) for layer in layers]
    if not points:
        raise BadInputError("no hook point to harvest: give --hook and --layer / --layers")
    return list(dict.fromkeys(points))


def check_one_pass(cfgs: list) -> None:
    """The harvest configs of one pass may differ only in hook point and --out."""
    if not cfgs:
        raise BadInputError("no hook point to harvest")
    shared = {k: v for k, v in asdict(cfgs[0]).items() if k not in ("hook", "layer", "out")}
    for cfg in cfgs[1:]:
        other = {k: v for k, v in asdict(cfg).items() if k not in ("hook", "layer", "out")}
        if other != shared:
            raise BadInputError("stores harvested in one pass differ only in hook point and --out")
    outs = [cfg.out.resolve() for cfg in cfgs]
    if len(set(outs)) != len(outs) or len({c.hook_spec for c in cfgs}) != len(cfgs):
        raise BadInputError("each hook point needs its own store folder, and each only once")
