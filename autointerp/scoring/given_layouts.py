"""The layouts `score --explanations` reads (given.py), each into rows of (feature index,
explanation text, optional source), with the model and source a file declares.

    ours         a folder of `export neuronpedia` batches (batch-N.json: the upload payload,
                 {modelId, source, features: [{index, explanations: [{text, methodName,
                 modelName}]}]}), or one such file
    neuronpedia  Neuronpedia's public export: a folder holding explanations/batch-N.jsonl.gz
                 (or that folder, or one such file), rows {modelId, layer, index,
                 description, typeName, explanationModelName}
    delphi       EleutherAI delphi's explanations folder: one file per latent,
                 `{hookpoint}_latent{N}.txt`, holding the explanation as a JSON string
    table        a CSV with a header, or JSONL: index, text and optionally source

Text that is not UTF-8, a missing field, an empty explanation or an index that is not a
whole number is one line of error.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from autointerp.errors import BadInputError

DELPHI_FILE = re.compile(r"^(?P<hook>.+)_latent(?P<index>\d+)\.txt$")
NEURONPEDIA_FIELDS = ("modelId", "layer", "index", "description")


@dataclass(frozen=True)
class Row:
    index: int
    text: str
    source: str | None
    where: str
    """file:line, for messages."""



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



def read_rows(path: Path, hook: str | None) -> tuple[str, list[Row], set]:
    """(layout, rows, the (model, source) pairs the file declares) of `path`; `hook`: the
    dictionary's hook point, which picks a delphi folder's hookpoint."""
    layout, files = _layout(path)
    if layout == "neuronpedia":
        return layout, *_neuronpedia_rows(files)
    if layout == "ours":
        return layout, *_our_rows(files)
    if layout == "delphi":
        return layout, _delphi_rows(path, hook), set()
    return layout, _table_rows(path), set()
