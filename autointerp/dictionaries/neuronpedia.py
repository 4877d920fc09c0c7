"""Where a dictionary's features live on Neuronpedia: its model id and source id, offline.

Neuronpedia names a feature `MODEL_ID/SOURCE/INDEX` (e.g. `gpt2-small/6-res-jb/123`), a
source being `LAYER-SET_NAME`. sae-lens's table of pretrained SAEs gives each SAE its
Neuronpedia id (`neuronpedia:` in its pretrained_saes.yaml), which the SAE's config
carries (`neuronpedia_id`, under `metadata` since sae-lens 6); a dictionary loaded as
`saelens:RELEASE/SAE_ID` is looked up in that table when sae-lens is installed. Nothing
is fetched. A dictionary with no id (ours, the baselines) gets a derived target, used by
`export neuronpedia` for a new source set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NEURONPEDIA_URL = "https://www.neuronpedia.org"


@dataclass(frozen=True)
class NeuronpediaTarget:
    model_id: str
    """Neuronpedia's model id, e.g. gpt2-small (lowercase)."""
    source: str
    """LAYER-SET_NAME, e.g. 6-res-jb (lowercase)."""
    known: bool
    """The id came from the dictionary (a page exists); False: derived for a new upload."""

    @property
    def id(self) -> str:
        return f"{self.model_id}/{self.source}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def _from_saelens_table(source: str | None) -> str | None:
    """The id in sae-lens's bundled table for `saelens:RELEASE/SAE_ID` (a local yaml file)."""
    if not source or not source.startswith("saelens:"):
        return None
    release, _, sae_id = source[len("saelens:"):].partition("/")
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    except ImportError:
        return None
    entry = get_pretrained_saes_directory().get(release)
    return (entry.neuronpedia_id or {}).get(sae_id) if entry is not None else None


def neuronpedia_id(meta: dict) -> str | None:
    """`MODEL_ID/SOURCE` of the dictionary on Neuronpedia, or None when it has none."""
    hyper = meta.get("hyperparameters") or {}
    for where in (meta, hyper, hyper.get("metadata") or {}):
        value = where.get("neuronpedia_id") if isinstance(where, dict) else None
        if isinstance(value, str) and value.count("/") == 1:
            return value
    return _from_saelens_table(meta.get("source"))


def neuronpedia_target(meta: dict, label: str | None = None) -> NeuronpediaTarget:
    """The dictionary's Neuronpedia model and source: its own id, or one derived from its
    model name, layer and method (`smollm2-135m`, `3-autointerp-topk`)."""
    known = neuronpedia_id(meta)
    if known:
        model_id, source = known.split("/")
        return NeuronpediaTarget(model_id, source, True)
    from autointerp.dictionaries.header import canonical_model

    model = _slug(canonical_model(meta.get("model")) or "model")
    layer = meta.get("layer")
    set_name = _slug(f"autointerp-{label or meta.get('method') or 'dictionary'}")
    return NeuronpediaTarget(model, f"{layer if layer is not None else 0}-{set_name}", False)


def feature_url(np_id: str, index: int) -> str:
    return f"{NEURONPEDIA_URL}/{np_id}/{int(index)}"


def source_layer(source: str) -> int | None:
    """The layer number that starts a Neuronpedia source id (`6-res-jb` -> 6)."""
    m = re.match(r"^(\d+)-", str(source))
    return int(m.group(1)) if m else None
