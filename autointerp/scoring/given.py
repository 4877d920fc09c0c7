"""Explanations written elsewhere, read so that `score --explanations FILE` scores them
instead of explaining.

Layouts read (each row: feature index, explanation text, optional source):

    ours         a folder of `export neuronpedia` batches (batch-N.json: the upload payload,
                 {modelId, source, features: [{index, explanations: [{text, methodName,
                 modelName}]}]}), or one such file
    neuronpedia  Neuronpedia's public export: a folder holding explanations/batch-N.jsonl.gz
                 (or that folder, or one such file), rows {modelId, layer, index,
                 description, typeName, explanationModelName}
    delphi       EleutherAI delphi's explanations folder: one file per latent,
                 `{hookpoint}_latent{N}.txt`, holding the explanation as a JSON string
    table        a CSV with a header, or JSONL: index, text and optionally source

Everything is read and checked before a run starts, so a bad file stops the command with
one line and nothing written: text that is not UTF-8, a missing field, an empty
explanation, a feature explained twice, or a file for another model or layer than the
dictionary's. Features the file does not explain are listed by `score`, not scored.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from autointerp import db as dbm
from autointerp.errors import BadInputError
from autointerp.scoring.explain import ExplanationFailed
from autointerp.types import Explanation

DELPHI_FILE = re.compile(r"^(?P<hook>.+)_latent(?P<index>\d+)\.txt$")
NEURONPEDIA_FIELDS = ("modelId", "layer", "index", "description")


@dataclass(frozen=True)
class Row:
    index: int
    text: str
    source: str | None
    where: str
    """file:line, for messages."""


@dataclass(frozen=True)
class GivenExplanations:
    path: str
    layout: str
    """ours | neuronpedia | delphi | table."""
    texts: dict[int, str]
    sources: dict[int, str | None]
    digest: str
    """sha256 of the (index, text) pairs: part of the run id, so each set gets its own run."""


def _decode(data: bytes, name: str) -> str:
    if name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise BadInputError(f"{name} is not a readable gzip file ({e})") from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")  # spreadsheets save a BOM
    except UnicodeDecodeError as e:
        raise BadInputError(f"{name} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                            f"{e.start})") from None


def _read(path: Path) -> str:
    return _decode(path.read_bytes(), str(path))


def _index(value, where: str) -> int:
    try:
        index = int(str(value).strip())
    except ValueError:
        raise BadInputError(f"{where}: feature index {value!r} is not a whole number") from None
    if index < 0:
        raise BadInputError(f"{where}: feature index {index} is negative")
    return index


def _text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInputError(f"{where}: the explanation is empty")
    return " ".join(value.split())


def _json_lines(text: str, name: str) -> list[tuple[str, dict]]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInputError(f"{name}:{n}: not a JSON line ({e.msg})") from None
        if not isinstance(row, dict):
            raise BadInputError(f"{name}:{n}: a row must be a JSON object")
        out.append((f"{name}:{n}", row))
    return out


def _need(row, fields, where: str, what: str) -> None:
    missing = [f for f in fields if not isinstance(row, dict) or row.get(f) is None]
    if missing:
        raise BadInputError(f"{where}: no {', '.join(missing)} field ({what} rows need "
                            f"{', '.join(fields)})")


def _neuronpedia_rows(files: list[Path]) -> tuple[list[Row], set]:
    rows, targets = [], set()
    for path in files:
        for where, r in _json_lines(_read(path), str(path)):
            _need(r, NEURONPEDIA_FIELDS, where, "Neuronpedia explanation")
            targets.add((str(r["modelId"]), str(r["layer"])))
            source = "/".join(str(r[k]) for k in ("typeName", "explanationModelName") if r.get(k))
            rows.append(Row(_index(r["index"], where), _text(r["description"], where),
                            source or None, where))
    return rows, targets


def _our_rows(files: list[Path]) -> tuple[list[Row], set]:
    rows, targets = [], set()
    for path in files:
        try:
            batch = json.loads(_read(path))
        except json.JSONDecodeError as e:
            raise BadInputError(f"{path}: not JSON ({e.msg})") from None
        _need(batch, ("modelId", "source", "features"), str(path), "upload batch")
        if not isinstance(batch["features"], list) or not all(
                isinstance(e, dict) for f in batch["features"] if isinstance(f, dict)
                for e in f.get("explanations") or []):
            raise BadInputError(f"{path}: features must be a list of objects, as "
                                "`export neuronpedia` writes them")
        targets.add((str(batch["modelId"]), str(batch["source"])))
        for k, feat in enumerate(batch["features"]):
            where = f"{path}: features[{k}]"
            _need(feat, ("index", "explanations"), where, "feature")
            for e in feat["explanations"]:
                _need(e, ("text",), where, "explanation")
                source = "/".join(str(e[k]) for k in ("methodName", "modelName") if e.get(k))
                rows.append(Row(_index(feat["index"], where), _text(e["text"], where),
                                source or None, where))
    return rows, targets


def _delphi_rows(folder: Path, hook: str | None) -> list[Row]:
    from autointerp.harvest.hook_names import translate_hook

    by_hook: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        m = DELPHI_FILE.match(path.name)
        if m:
            by_hook.setdefault(m.group("hook"), []).append(path)
    ours = {h: translate_hook(h) for h in by_hook}
    chosen = [h for h in by_hook if hook is None or ours[h] == hook]
    if len(chosen) != 1:
        found = ", ".join(f"{h} ({ours[h]})" for h in by_hook)
        raise BadInputError(f"{folder} holds delphi explanations of {found}; none or several "
                            f"match the dictionary's hook point {hook}")
    rows = []
    for path in by_hook[chosen[0]]:
        where = str(path)
        try:
            value = json.loads(_read(path))
        except json.JSONDecodeError as e:
            raise BadInputError(f"{where}: not a JSON string ({e.msg})") from None
        rows.append(Row(int(DELPHI_FILE.match(path.name).group("index")), _text(value, where),
                        "delphi", where))
    return rows


def _table_rows(path: Path) -> list[Row]:
    text = _read(path)
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        items = _json_lines(text, str(path))
    else:
        reader = csv.DictReader(io.StringIO(text))
        items = [(f"{path}:{n}", r) for n, r in enumerate(reader, start=2)]
    rows = []
    for where, r in items:
        _need(r, ("index", "text"), where, "explanation table")
        rows.append(Row(_index(r["index"], where), _text(r["text"], where),
                        r.get("source") or None, where))
    return rows


def _layout(path: Path) -> tuple[str, list[Path]]:
    if path.is_dir():
        inner = path / "explanations"
        for folder in (inner, path):
            files = sorted(folder.glob("batch-*.jsonl.gz")) + sorted(folder.glob("batch-*.jsonl"))
            if files:
                return "neuronpedia", files
        if sorted(path.glob("batch-*.json")):
            return "ours", sorted(path.glob("batch-*.json"))
        if any(DELPHI_FILE.match(p.name) for p in path.iterdir()):
            return "delphi", [path]
        raise BadInputError(f"{path} holds no explanations (batch-N.json, "
                            "explanations/batch-N.jsonl.gz or {hookpoint}_latent{N}.txt files)")
    if not path.is_file():
        raise BadInputError(f"explanations file {path} does not exist")
    if path.suffix == ".json":
        return "ours", [path]
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        first = next(iter(_json_lines(_read(path), str(path))), (None, {}))[1]
        return ("neuronpedia" if "description" in first or "modelId" in first else "table"), [path]
    return "table", [path]


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
    layout, files = _layout(path)
    targets: set = set()
    if layout == "neuronpedia":
        rows, targets = _neuronpedia_rows(files)
    elif layout == "ours":
        rows, targets = _our_rows(files)
    elif layout == "delphi":
        rows = _delphi_rows(path, declared_hook(meta))
    else:
        rows = _table_rows(path)
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
