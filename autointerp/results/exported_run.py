"""One scored run read back from the results database, for the exports (neuronpedia.py,
saebench.py): its row, settings, dictionary, feature rows and fragment set."""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autointerp import db as dbm
from autointerp.errors import BadInputError
from autointerp.scoring.fragments import FragmentSet, fragment_set_from_json


@dataclass(frozen=True)
class ExportedRun:
    run: dict
    """The `runs` row."""
    config: dict
    meta: dict
    """The dictionary's metadata."""
    dictionary_path: str | None
    features: list[dict]
    """The run's `features` rows (scored and failed), by feature."""
    fragments: FragmentSet | None
    """The fragment set the run scored (None if the database no longer holds it)."""

    @property
    def id(self) -> str:
        return self.run["id"]

    @property
    def scorer(self) -> str:
        return self.run.get("scorer") or "simulation"

    @property
    def scored(self) -> list[dict]:
        return [f for f in self.features if f["status"] == "scored"]


def find_run(db, run: str) -> dict:
    """The run whose id is, or starts with, `run` (as `compare` prints ids)."""
    rows = list(db.query("select * from runs where id like ? order by id", [f"{run}%"])) \
        if run and "runs" in db.table_names() else []
    if not rows:
        known = list(db.query("select id, label, scorer from runs order by rowid limit 10")) \
            if "runs" in db.table_names() else []
        listed = "; ".join(f"{r['id'][:12]} {r['label']} ({r['scorer'] or 'simulation'})"
                           for r in known)
        raise BadInputError(f"no run {run!r} in the database; its runs: {listed or 'none'}")
    if len(rows) > 1:
        raise BadInputError(f"run {run!r} is ambiguous ({len(rows)} runs start with it); "
                            "give more of its id")
    return rows[0]


def fragment_set_for(db, config: dict) -> FragmentSet | None:
    """The stored fragment set a run's settings name (its key, as pipeline.fragment_set)."""
    from autointerp.scoring.pipeline import RUN_VERSION, sha256_json

    key = sha256_json({"dictionary": config.get("dictionary_id"), "store": config.get("store_id"),
                       "cfg": config.get("fragments"), "version": config.get("version",
                                                                             RUN_VERSION)})
    rows = list(db.query("select data from fragment_sets where id = ?", [key]))
    return fragment_set_from_json(dbm.loads(zlib.decompress(rows[0]["data"]))) if rows else None


def load_run(db, run: str) -> ExportedRun:
    row = find_run(db, run)
    dictionary = db["dictionaries"].get(row["dictionary_id"])
    features = list(db.query("select * from features where run_id = ? order by feature",
                             [row["id"]]))
    if not any(f["status"] == "scored" for f in features):
        raise BadInputError(f"run {row['id'][:12]} has no scored features to export")
    config = dbm.loads(row["config"])
    return ExportedRun(row, config, dbm.loads(dictionary["meta"] or "{}"), dictionary["path"],
                       features, fragment_set_for(db, config))


def write_replacing(out: Path, write: Callable[[Path], None], marker: str) -> None:
    """Write with `write(tmp)` into a temporary sibling of `out`, then move it into place:
    an interrupted export leaves nothing half-written. A folder `out` is replaced only when
    it holds `marker` (an earlier export), so no one's other files are deleted."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / marker).exists():
        raise BadInputError(f"{out} exists and is not an earlier export; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(tmp)
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
