"""Explanations written elsewhere, read so that `score --explanations FILE` scores them
instead of explaining (the layouts: given_layouts.py; ours, Neuronpedia's public export,
delphi's explanations folder, a CSV/JSONL table).

Everything is read and checked before a run starts, so a bad file stops the command with
one line and nothing written: text that is not UTF-8, a missing field, an empty
explanation, a feature explained twice, an index beyond the dictionary's width, or a file
for another model or layer than the dictionary's. Features the file does not explain are
listed by `score`, not scored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from autointerp import db as dbm
from autointerp.errors import BadInputError
from autointerp.scoring.explain import ExplanationFailed
from autointerp.scoring.given_layouts import Row, read_rows
from autointerp.types import Explanation


@dataclass(frozen=True)
class GivenExplanations:
    path: str
    layout: str
    """ours | neuronpedia | delphi | table."""
    texts: dict[int, str]
    sources: dict[int, str | None]
    digest: str
    """sha256 of the (index, text) pairs: part of the run id, so each set gets its own run."""


def _check_target(targets: set, meta: dict, path: Path, dict_name: str) -> None:
    """Refuse a file for another model or layer than the dictionary's."""
    from autointerp.dictionaries.header import canonical_model
    from autointerp.dictionaries.neuronpedia import (
        neuronpedia_id,
        neuronpedia_target,
        source_layer,
    )

    if len(targets) > 1:
        raise BadInputError(f"{path} holds explanations of several sources "
                            f"({', '.join(sorted('/'.join(t) for t in targets))}); give one")
    if not targets:
        return
    model, layer = next(iter(targets))
    known = neuronpedia_id(meta)
    if known:
        ok = f"{model}/{layer}".lower() == known.lower()
    else:
        ours = canonical_model(meta.get("model"))
        # Neuronpedia numbers a source by the block of its TransformerLens hook, so
        # blocks.6.hook_resid_pre (our resid.5) is layer 6 there.
        raw = re.search(r"\.(\d+)\.", str(meta.get("hook_source_name") or ""))
        layers = {meta.get("layer"), int(raw.group(1)) if raw else None} - {None}
        ok = ((ours is None or canonical_model(model) == ours)
              and (not layers or source_layer(layer) is None or source_layer(layer) in layers))
        if "-autointerp-" in layer:  # our own export names the dictionary it came from
            ok = ok and layer == neuronpedia_target(meta).source
    if not ok:
        theirs = known or f"model {meta.get('model')} layer {meta.get('layer')}"
        raise BadInputError(f"{path} explains {model}/{layer}, but dictionary {dict_name} is "
                            f"{theirs}")


def read_explanations(path: str | Path, meta: dict, dict_name: str = "",
                      source: str | None = None) -> GivenExplanations:
    """The explanations in `path` for the dictionary with metadata `meta`; `source` keeps
    only rows from that source (e.g. a Neuronpedia `typeName/explanationModelName`)."""
    from autointerp.dictionaries.header import declared_hook

    path = Path(path)
    layout, rows, targets = read_rows(path, declared_hook(meta))
    _check_target(targets, meta, path, dict_name)
    if source is not None:
        rows = [r for r in rows if r.source == source]
    seen: dict[int, Row] = {}
    for r in rows:
        if r.index in seen:
            both = sorted({str(seen[r.index].source), str(r.source)})
            raise BadInputError(f"{r.where}: feature {r.index} is explained twice (also at "
                                f"{seen[r.index].where}; sources {', '.join(both)}): keep one "
                                "per feature, e.g. with --explanations-source")
        seen[r.index] = r
    if not seen:
        raise BadInputError(f"{path} holds no explanations"
                            + (f" from source {source!r}" if source is not None else ""))
    texts = {i: r.text for i, r in sorted(seen.items())}
    digest = hashlib.sha256(dbm.dumps(sorted(texts.items())).encode()).hexdigest()
    return GivenExplanations(str(path), layout, texts,
                             {i: r.source for i, r in sorted(seen.items())}, digest)


class GivenExplainer:
    """Explainer protocol over explanations read from a file: it looks each feature up."""

    def __init__(self, given: GivenExplanations):
        self.given = given
        self.name = f"given:{given.layout}"

    def settings(self) -> dict:
        return {"name": self.name, "sha256": self.given.digest}

    def explained(self, feature: int) -> bool:
        return feature in self.given.texts

    async def explain(self, fragments, sample_index: int = 0) -> Explanation:
        raise ExplanationFailed("given explanations are looked up by feature (explain_feature)")

    async def explain_feature(self, feature: int, fragments, sample_index: int = 0) -> Explanation:
        if feature not in self.given.texts:
            raise ExplanationFailed(f"{self.given.path} gives no explanation of feature {feature}")
        return Explanation(self.given.texts[feature], self.name, sample_index)


def given_explainer(path: Path, dictionaries: list[Path], source: str | None,
                    n_explanations: int, workers: int) -> GivenExplainer:
    """`score --explanations`: the file read and checked against the one dictionary scored,
    before anything is loaded or written."""
    from autointerp.dictionaries.sources import read_header

    if len(dictionaries) != 1:
        raise BadInputError(f"--explanations scores one dictionary (got {len(dictionaries)})")
    if n_explanations != 1 or workers != 1:
        raise BadInputError("--explanations gives one explanation per feature and is scored in "
                            "one process: leave --explanations-per-feature and --workers at 1")
    header = read_header(dictionaries[0])
    given = read_explanations(path, header.meta, str(dictionaries[0]), source)
    beyond = max(given.texts)
    if beyond >= header.n_features:  # a file for a wider dictionary
        raise BadInputError(f"{path} explains feature {beyond}, but dictionary "
                            f"{dictionaries[0]} has {header.n_features} features")
    return GivenExplainer(given)
