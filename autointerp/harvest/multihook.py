"""Several hook points from one forward pass: the `--layers` / `--hook` lists and the checks
that one pass can serve them all. The capture itself is `hooks.capture_many`, which a
single-hook capture also goes through, so every store of a multi-hook harvest holds exactly
what a single-hook harvest of its hook point holds.
"""

from __future__ import annotations

import re
from dataclasses import asdict

from autointerp.errors import BadInputError
from autointerp.harvest.hook_names import LAYER_KINDS, split_hook, translate_hook


def parse_layers(spec: str) -> list[int]:
    """`0-5`, `0,2,4` or `0-2,7` -> sorted distinct layer numbers."""
    layers: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise BadInputError(f"--layers {spec!r}: use a range like 0-5, a list like 0,2,4, or both")
        layers.update(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    return sorted(layers)


def hook_points(hooks: str, layers: list[int]) -> list[tuple[str, int | None]]:
    """(kind, layer) pairs from a comma-separated `--hook` list: a kind (resid, resid_mid, mlp,
    attn) is taken at every layer of `layers`; a full name in any vocabulary hook_names knows
    (embed, mlp.3, blocks.3.hook_resid_pre, layers.3) as it is."""
    points: list[tuple[str, int | None]] = []
    for item in (h.strip() for h in hooks.split(",") if h.strip()):
        if item not in LAYER_KINDS:
            points.append(split_hook(translate_hook(item)))
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
