"""The activations a score run needs: with `score --model M --corpus C` instead of `--acts`,
each dictionary is scored on a store harvested at its own hook point (translated into our
vocabulary) with its own input transform, unless `--hook`/`--layer` say otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autointerp.errors import BadInputError


@dataclass(frozen=True)
class HarvestSpec:
    model: str
    """Subject model to harvest: HF name, local folder or smollm2-135m."""
    hook: str | None
    """Hook point for every dictionary; None: each dictionary's own."""
    layer: int | None
    """With a hook kind (resid, mlp, ...) or alone (resid.L)."""
    corpus: str | None
    n_tokens: int
    seed: int = 0
    device: str = "auto"
    force: bool = False
    """Harvest even for a dictionary that declares another model."""
    dtype: str = "auto"
    """Model compute dtype of the harvest, as `harvest --dtype`."""


def hook_for(path: Path, meta: dict, spec: HarvestSpec) -> str:
    """Our name of the hook point to harvest for the dictionary at `path`."""
    from autointerp.dictionaries.dictionary import declared_hook
    from autointerp.harvest.hooks import resolve_hook_name

    if spec.hook is None and spec.layer is None:
        hook = declared_hook(meta)
        if hook is None:
            raise BadInputError(f"dictionary {path} declares no hook point; pass --hook "
                                "(e.g. --hook resid.6 or --hook blocks.6.hook_resid_pre)")
        return hook
    asked = resolve_hook_name(spec.hook or "resid", spec.layer)
    # Refused before the harvest (which can take hours) rather than by the store check after it.
    declared = None if spec.force else declared_hook(meta)
    if declared is not None and declared != asked:
        raise BadInputError(f"dictionary {path} was fit at hook {declared}, but --hook/--layer "
                            f"ask for {asked} (drop them, or pass --force to score it anyway)")
    return asked


def _check_model(path: Path, meta: dict, spec: HarvestSpec) -> None:
    from autointerp.dictionaries.dictionary import canonical_model

    declared = meta.get("model")
    if declared and not spec.force and canonical_model(declared) != canonical_model(spec.model):
        raise BadInputError(f"dictionary {path} was fit on activations of model {declared}, not "
                            f"{spec.model} (pass --force to score it anyway)")


def harvest_for(paths: list[Path], spec: HarvestSpec) -> dict[Path, Path]:
    """Dictionary path -> store path; one harvest per distinct (hook point, input transform)."""
    from autointerp.dictionaries.sources import load_dictionary
    from autointerp.harvest.run import HarvestConfig, harvest

    if spec.corpus is None:
        raise BadInputError("--model needs --corpus (or pass --acts)")
    wanted = {}
    for path in paths:
        meta = load_dictionary(path).meta
        _check_model(path, meta, spec)
        wanted[path] = (hook_for(path, meta, spec), meta.get("input_transform"))
    made = {key: harvest(HarvestConfig(model=spec.model, hook=key[0], input_transform=key[1],
                                       corpus=spec.corpus, n_tokens=spec.n_tokens, seed=spec.seed,
                                       device=spec.device, dtype=spec.dtype))
            for key in dict.fromkeys(wanted.values())}
    return {path: made[key] for path, key in wanted.items()}
