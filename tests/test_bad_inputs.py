"""Bad inputs through the real CLI: each gives one `error: ...` line on
stderr, exit code 1, no traceback (unless --debug) and no half-written output."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import (
    cli_env,
    closed_port,
    error_line,
    random_dictionary,
    run_cli,
    shared_inputs,
)
from tests.support.servers.faulty import FaultPlan, FaultyServer


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return shared_inputs(tmp_path_factory)


@pytest.fixture(scope="module")
def good_dict(inputs, tmp_path_factory) -> Path:
    return random_dictionary(inputs.store, tmp_path_factory.mktemp("good") / "dict", 8)


def lexical_score(dictionary: Path, db: Path, *extra: str) -> list[str]:
    return ["score", "--dict", str(dictionary), "--db", str(db), "--explainer", "lexical",
            "--scoring-backend", "lexical", "--n-sampled", "4", "--no-selftest", *extra]


def assert_nothing_scored(db: Path) -> None:
    """A failed score run may have created the database, but recorded no run in it."""
    if db.exists():
        con = sqlite3.connect(db)
        assert con.execute("select count(*) from runs").fetchone()[0] == 0
        assert con.execute("select count(*) from features").fetchone()[0] == 0
        con.close()


def copy_dictionary(good: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(good, tmp_path / "dict"))


def copy_store(store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(store, tmp_path / "store"))


# --- dictionaries ----------------------------------------------------------------------

def corrupt_weights(d: Path) -> None:
    (d / "dictionary.safetensors").write_bytes(b"\x00garbage" * 64)


def truncate_weights(d: Path) -> None:
    path = d / "dictionary.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt_config(d: Path) -> None:
    (d / "config.json").write_text('{"format": "autointerp-dictionary", "d_mo')


def remove_weights(d: Path) -> None:
    (d / "dictionary.safetensors").unlink()


@pytest.mark.parametrize(("damage", "message"), [
    (corrupt_weights, "dictionary.safetensors are truncated or corrupt"),
    (truncate_weights, "dictionary.safetensors are truncated or corrupt"),
    (corrupt_config, "config.json is not valid JSON"),
    (remove_weights, "dictionary.safetensors are missing"),
])
def test_damaged_dictionary(inputs, good_dict, tmp_path, damage, message):
    d = copy_dictionary(good_dict, tmp_path)
    damage(d)
    db = tmp_path / "r.db"
    assert message in error_line(run_cli(lexical_score(d, db, "--acts", inputs.store)))
    assert_nothing_scored(db)


def test_missing_dictionary_and_debug_traceback(inputs, tmp_path):
    args = lexical_score(tmp_path / "no-such-dict", tmp_path / "r.db", "--acts", inputs.store)
    assert error_line(run_cli(args)) == f"dictionary {tmp_path / 'no-such-dict'} does not exist"
    debug = run_cli(["--debug", *args])
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "BadInputError: dictionary" in debug.stderr


def test_dictionary_of_another_width(inputs, tmp_path):
    d = random_dictionary(inputs.store, tmp_path / "narrow", 8, d_model=16)
    db = tmp_path / "r.db"
    message = error_line(run_cli(lexical_score(d, db, "--acts", inputs.store)))
    assert message == "dictionary width 16 does not match the activations' d_model 32"
    assert_nothing_scored(db)


def test_dictionary_fit_on_another_model(inputs, tmp_path):
    d = tmp_path / "other-model-dict"
    fit = run_cli(["baseline", "--acts", inputs.other_store, "--method", "neurons", "--out", d])
    assert fit.returncode == 0, fit.stderr
    db = tmp_path / "r.db"
    message = error_line(run_cli(lexical_score(d, db, "--acts", inputs.store)))
    assert message.startswith(f"dictionary was fit on activations of model {inputs.other_model}")
    assert_nothing_scored(db)


# --- activation stores -----------------------------------------------------------------

def truncate_eval_shard(store: Path) -> None:
    path = store / "eval" / "00000.acts.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def nan_eval_shard(store: Path) -> None:
    path = store / "eval" / "00000.acts.npy"
    acts = np.load(path)
    acts[5, 3] = np.nan
    np.save(path, acts)  # same shape and size: only the values are bad


@pytest.mark.parametrize(("damage", "message"), [
    (truncate_eval_shard, "eval/00000.acts.npy is truncated"),
    (nan_eval_shard, "has NaN or inf activations (eval shard 0)"),
])
def test_damaged_store_is_refused_by_score(inputs, good_dict, tmp_path, damage, message):
    store = copy_store(inputs.store, tmp_path)
    damage(store)
    db = tmp_path / "r.db"
    assert message in error_line(run_cli(lexical_score(good_dict, db, "--acts", store)))
    assert_nothing_scored(db)


def test_damaged_store_is_refused_by_train(inputs, tmp_path):
    store = copy_store(inputs.store, tmp_path)
    path = store / "train" / "00001.acts.npy"
    acts = np.load(path)
    acts[-1] = np.inf
    np.save(path, acts)
    out = tmp_path / "sae"
    result = run_cli(["train", "--acts", store, "--arch", "topk", "--k", "4", "--ratio", "1",
                      "--batch-size", "1024", "--out", out, "--device", "cpu"])
    assert "NaN or inf" in error_line(result)
    assert not (out / "config.json").exists() and not (out / "dictionary.safetensors").exists()


def test_outputs_of_killed_runs_are_refused_in_one_line(inputs, good_dict, tmp_path):
    # What a SIGKILLed harvest leaves: metadata written first, marked incomplete.
    store = copy_store(inputs.store, tmp_path)
    meta = json.loads((store / "metadata.json").read_text())
    (store / "metadata.json").write_text(json.dumps({**meta, "status": "incomplete"}))
    db = tmp_path / "r.db"
    message = error_line(run_cli(lexical_score(good_dict, db, "--acts", store)))
    assert message == f"activation store {store} is incomplete; rerun the harvest to finish it"
    # What a train killed between its two renames leaves: weights, no config.json yet.
    d = tmp_path / "sae"
    d.mkdir()
    shutil.copy(good_dict / "dictionary.safetensors", d)
    message = error_line(run_cli(lexical_score(d, db, "--acts", inputs.store)))
    assert message.startswith(f"no dictionary in {d}: expected config.json")
    assert_nothing_scored(db)


# --- corpora ---------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    (b"\n \n\n", "is empty: it has no text"),
    ("naïve café\n".encode("latin-1"), "is not UTF-8 text"),
])
def test_bad_corpus_leaves_no_store(inputs, tmp_path, content, message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    out = tmp_path / "store"
    result = run_cli(["harvest", "--model", inputs.model, "--layer", "1", "--corpus", corpus,
                      "--tokens", "500", "--out", out, "--device", "cpu"])
    assert message in error_line(result)
    assert not out.exists()


# --- simulator and endpoints -----------------------------------------------------------

def openai_score(dictionary: Path, db: Path, url: str, *extra: str) -> list[str]:
    return ["score", "--dict", str(dictionary), "--db", str(db), "--n-sampled", "4",
            "--explainer", "openai", "--explainer-model", "m", "--scoring-backend", "openai",
            "--scoring-model", "m", "--base-url", url, *extra]


def test_unknown_simulator_mode(good_dict, tmp_path):
    db = tmp_path / "r.db"
    result = run_cli(lexical_score(good_dict, db, "--scoring-mode", "telepathy"))
    assert error_line(result).startswith("Invalid value for '--scoring-mode': 'telepathy' is not "
                                         "one of 'auto', 'all-at-once'")
    assert_nothing_scored(db)


def test_unreachable_endpoint_fails_in_bounded_time(good_dict, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    db = tmp_path / "r.db"
    t0 = time.monotonic()
    message = error_line(run_cli(openai_score(good_dict, db, url), timeout=120))
    elapsed = time.monotonic() - t0
    assert message.startswith(f"endpoint {url} failed after ") and "cannot connect" in message
    assert elapsed < 90, elapsed  # six attempts with backoff, not a hang
    assert_nothing_scored(db)


def test_invalid_api_key_fails_at_once(good_dict, tmp_path):
    env_key = "AUTOINTERP_RELIABILITY_KEY"
    db = tmp_path / "r.db"
    with FaultyServer(FaultPlan(api_key="the-right-key", max_seconds=120)) as server:
        args = openai_score(good_dict, db, server.url, "--api-key-env", env_key,
                            "--scoring-mode", "json", "--no-selftest", "--concurrency", "1")
        # A fresh database: the first request (the capability probe) gets the 401.
        message = error_line(run_cli(args, env=cli_env(**{env_key: "a-wrong-key"})))
        assert message == f"endpoint {server.url} rejected the API key (401) from ${env_key}"
        assert server.count() == 1 and server.count("401") == 1  # no retries
        assert_nothing_scored(db)
        # With the probe cached by a run with the right key, the 401 comes during a feature:
        # the run stops there, after at most that feature's calls (one explanation, ten
        # simulated fragments, already queued), instead of failing feature after feature.
        right = run_cli(args, env=cli_env(**{env_key: "the-right-key"}))
        assert right.returncode == 0, right.stderr
        n_before = server.count()
        other_sample = [*args, "--seed", "1"]
        message = error_line(run_cli(other_sample, env=cli_env(**{env_key: "a-wrong-key"})))
        assert message == f"endpoint {server.url} rejected the API key (401) from ${env_key}"
        after = server.log[n_before:]
        assert 1 <= len(after) <= 11 and {r.fault for r in after} == {"401"}
        assert len({r.body_sha for r in after}) == len(after)  # no request retried
        assert "401" not in " ".join(failure_reasons(db))  # nothing recorded as failed by it


def failure_reasons(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [r[0] for r in con.execute("select reason from features where status = 'failed'")]
    finally:
        con.close()
