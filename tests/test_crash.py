"""Crash safety: `harvest`, `train` and `score` are SIGKILLed at seeded
random points of their work, then rerun. After every kill nothing a later run reads is
partial (only temp-named files can be, and loading either works or fails in one line);
after the rerun the result equals an uninterrupted run's, the database passes
`PRAGMA integrity_check` and no feature row is duplicated."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.dictionaries.dictionary import WEIGHTS_NAME
from autointerp.dictionaries.sources import load_dictionary
from autointerp.errors import BadInputError
from autointerp.harvest.store import SPLITS, ActivationStore
from autointerp.sae.train import CHECKPOINT_NAME
from tests.support.cli import (
    TEMP_NAME,
    random_dictionary,
    run_and_kill,
    run_cli,
    shared_inputs,
    store_arrays,
    timed_run,
)

KILLS = 3
SEED = 6
VOLATILE_META = ("created", "last_run")
"""Store metadata that records when and how fast, not what: it differs between runs."""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return shared_inputs(tmp_path_factory)


def fractions(salt: str) -> list[float]:
    rng = random.Random(f"{SEED}-{salt}")
    return [rng.uniform(0.0, 0.8) for _ in range(KILLS)]


# --- harvest ----------------------------------------------------------------------------

def check_killed_store(out: Path) -> str:
    """What a killed harvest left: 'nothing', 'incomplete' or 'complete'. Every file not
    temp-named must be whole, and only a complete store may load."""
    if not (out / "metadata.json").exists():
        with pytest.raises(BadInputError, match="not an activation store"):
            ActivationStore(out)
        return "nothing"
    meta = json.loads((out / "metadata.json").read_text())  # written atomically: parses
    for split in SPLITS:
        files = sorted((out / split).glob("*")) if (out / split).exists() else []
        for path in (p for p in files if not TEMP_NAME.match(p.name)):
            if path.suffix == ".npy":
                np.load(path)  # a torn .npy fails to load; renamed files are whole
            elif path.suffix == ".json":  # a shard marker: its data files match it
                info = json.loads(path.read_text())
                stem = path.name.removesuffix(".json")
                for name, size in info["bytes"].items():
                    assert (out / split / f"{stem}.{name}.npy").stat().st_size == size
    if meta["status"] == "complete":
        assert ActivationStore(out).n_train_tokens > 0
        return "complete"
    with pytest.raises(BadInputError, match="incomplete; rerun the harvest"):
        ActivationStore(out)
    return "incomplete"


def test_harvest_killed_at_random_points_resumes_to_the_same_store(inputs, tmp_path):
    out = tmp_path / "store"
    args = list(inputs.harvest_args) + ["--out", str(out)]
    killed, states = 0, []
    for fraction in fractions("harvest"):
        killed += run_and_kill(args, out, inputs.harvest_timing, fraction)
        states.append(check_killed_store(out))
    print("harvest states", killed, states, inputs.harvest_timing)
    assert killed >= 1, states
    result = run_cli(args)
    assert result.returncode == 0, result.stderr
    assert check_killed_store(out) == "complete"
    ours, reference = store_arrays(out), store_arrays(inputs.store)
    assert ours.keys() == reference.keys()
    for name, array in reference.items():
        np.testing.assert_array_equal(ours[name], array, err_msg=name)
    meta, ref_meta = (json.loads((p / "metadata.json").read_text()) for p in (out, inputs.store))
    for key in VOLATILE_META:
        meta.pop(key), ref_meta.pop(key)
    assert meta == ref_meta


# --- train ------------------------------------------------------------------------------

TRAIN_BATCH, TRAIN_STEPS = 128, 2000
"""The trainer checkpoints every 1,000 steps: kills land after the first checkpoint, so the
rerun resumes from it."""


def train_args(store: Path, out: Path) -> list[str]:
    return ["train", "--acts", str(store), "--arch", "relu", "--ratio", "2", "--device", "cpu",
            "--batch-size", str(TRAIN_BATCH), "--tokens", str(TRAIN_BATCH * TRAIN_STEPS),
            "--out", str(out)]


def check_killed_dictionary(out: Path) -> str:
    """What a killed train left: 'nothing', 'checkpoint' (resumable) or 'finished'."""
    files = [p for p in out.glob("*") if not TEMP_NAME.match(p.name)] if out.exists() else []
    if (out / CHECKPOINT_NAME).exists():  # renamed into place whole: it loads
        torch.load(out / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    if (out / "config.json").exists():  # written last: the dictionary is finished
        dictionary = load_dictionary(out)
        assert dictionary.meta["metrics"]["fvu"] >= 0
        return "finished"
    assert {p.name for p in files} <= {CHECKPOINT_NAME, WEIGHTS_NAME}, files
    with pytest.raises(BadInputError):
        load_dictionary(out)
    return "checkpoint" if (out / CHECKPOINT_NAME).exists() else "nothing"


def test_train_killed_at_random_points_resumes_to_the_same_dictionary(inputs, tmp_path):
    reference = tmp_path / "reference"
    timing = timed_run(train_args(inputs.store, reference), reference)
    out = tmp_path / "killed"
    killed, states = 0, []
    for fraction in fractions("train"):
        killed += run_and_kill(train_args(inputs.store, out), out, timing, fraction)
        states.append(check_killed_dictionary(out))
    print("train states", killed, states, timing)
    assert killed >= 1, states
    result = run_cli(train_args(inputs.store, out))
    assert result.returncode == 0, result.stderr
    assert check_killed_dictionary(out) == "finished"
    ours, theirs = load_dictionary(out), load_dictionary(reference)
    for name, tensor in theirs.tensors().items():  # same data order, same Adam state
        torch.testing.assert_close(ours.tensors()[name], tensor, rtol=0, atol=0, msg=name)
    assert ours.meta == theirs.meta


# --- score ------------------------------------------------------------------------------

N_FEATURES = 300
"""Features to score: a few seconds of lexical scoring, so kills land mid-run."""


def score_args(dictionary: Path, db: Path) -> list[str]:
    return ["score", "--dict", str(dictionary), "--db", str(db), "--explainer", "lexical",
            "--scoring-backend", "lexical", "--n-sampled", str(N_FEATURES), "--seed", "0"]


def check_killed_db(db: Path) -> int:
    """The database a killed score run left is sound; returns its number of feature rows."""
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        if "_migrations" not in tables:  # killed before the first migration committed
            assert tables <= {"_migrations"}, tables
            return 0
        dup = con.execute("select run_id, feature, count(*) from features "
                          "group by run_id, feature having count(*) > 1").fetchall()
        assert dup == []
        rows = con.execute("select status, score, fragments from features").fetchall()
        for status, _score, fragments in rows:  # each row was written whole, in one statement
            assert status in ("scored", "failed")
            assert json.loads(fragments)["scoring"]
        return len(rows)
    finally:
        con.close()


def feature_results(db: Path) -> dict[int, tuple]:
    con = sqlite3.connect(db)
    try:
        runs = con.execute("select id, n_sampled from runs").fetchall()
        assert len(runs) == 1, runs
        rows = con.execute("select feature, status, explanation, score, score_top, score_random "
                           "from features where run_id = ?", [runs[0][0]]).fetchall()
        assert len(rows) == runs[0][1]
        return {r[0]: r[1:] for r in rows}
    finally:
        con.close()


def test_score_killed_at_random_points_scores_every_feature_once(inputs, tmp_path):
    dictionary = random_dictionary(inputs.store, tmp_path / "dict", N_FEATURES)
    reference_db = tmp_path / "reference.db"
    timing = timed_run(score_args(dictionary, reference_db), reference_db)
    expected = feature_results(reference_db)
    assert len(expected) == N_FEATURES and all(r[0] == "scored" for r in expected.values())

    db = tmp_path / "killed.db"
    killed, rows_after_kill = 0, []
    for fraction in fractions("score"):
        killed += run_and_kill(score_args(dictionary, db), db, timing, fraction)
        rows_after_kill.append(check_killed_db(db))
    print("score rows", killed, rows_after_kill, timing)
    assert killed >= 1, rows_after_kill
    result = run_cli(score_args(dictionary, db))
    assert result.returncode == 0, result.stderr
    check_killed_db(db)
    assert feature_results(db) == expected
