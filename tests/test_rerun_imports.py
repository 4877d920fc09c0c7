"""A rerun of `score` imports only what it needs: once a dictionary's
fragments are stored, reading its header and the stored fragments needs no torch, the
slowest import of a start-up (about 1 s)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from tests.support.cli import cli_env, random_dictionary, shared_inputs

REPORT = ("import atexit, sys; atexit.register(lambda: print('torch imported:', 'torch' in "
          "sys.modules)); from autointerp.cli import main; main()")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return shared_inputs(tmp_path_factory)


def score(dictionary, db) -> str:
    args = ["score", "--dict", str(dictionary), "--db", str(db), "--explainer", "lexical",
            "--scoring-backend", "lexical", "--n-sampled", "5"]
    done = subprocess.run([sys.executable, "-c", REPORT, *args], env=cli_env(),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_rerun_with_stored_fragments_imports_no_torch(inputs, tmp_path):
    dictionary = random_dictionary(inputs.store, tmp_path / "dict", 40)
    first = score(dictionary, tmp_path / "a.db")
    assert "torch imported: True" in first  # the fragments are computed with the weights
    # the same fragments, new runs (features deleted): every score is recomputed
    with sqlite3.connect(tmp_path / "a.db") as con:
        con.execute("delete from features")
    again = score(dictionary, tmp_path / "a.db")
    assert "torch imported: False" in again
    assert again.count("lexical") == first.count("lexical")
