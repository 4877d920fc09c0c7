"""`score --workers N`: the features of a run split over N processes get exactly the rows
one process writes, each feature once, with its LLM calls made once; the parent's
progress counts every worker's features; an in-process model is refused."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from functools import partial
from pathlib import Path

import pytest

from autointerp.db import open_db
from autointerp.errors import AutointerpError
from autointerp.scoring.fragments import FragmentConfig
from autointerp.scoring.pipeline import NullProgress, ScoreConfig, score_dictionary_runs
from autointerp.scoring.scorers.lexical import LexicalExplainer, LexicalSimulator
from autointerp.scoring.workers import Workers
from tests.support.cli import check_db, llm, random_dictionary, run_cli, shared_inputs
from tests.support.data import sparse_planted
from tests.support.servers.oracle import OracleEndpoint

ROWS = ("select r.scorer, f.feature, f.status, f.reason, f.explanation, f.score, f.auroc "
        "from features f join runs r on r.id = f.run_id order by 1, 2")


def lexical_llms(pid_file: Path, db):
    """A worker's make_llms: lexical explainer and simulator; notes the process it runs in."""
    with open(pid_file, "a") as f:
        f.write(f"{os.getpid()}\n")
    return LexicalExplainer(), LexicalSimulator(), []


def dying_llms(db):
    os._exit(3)  # a worker killed (out of memory, a signal) before it scores anything


class Counting(NullProgress):
    def __init__(self):
        self.total = self.done = 0

    def features_task(self, label: str, total: int, already_done: int) -> None:
        self.total = total - already_done

    def feature_done(self, failed: bool) -> None:
        self.done += 1


def test_workers_write_the_rows_of_one_process(tmp_path):
    _, dict_path = sparse_planted(tmp_path, n_fragments=200, lexical=True)
    cfg = ScoreConfig(dict_path, scorers=("all",), selftest=False,
                      fragments=FragmentConfig(n_features=6))
    rows = {}
    for n in (1, 3):
        db_path, pids = tmp_path / f"{n}.db", tmp_path / f"pids-{n}"
        progress = Counting()
        with Workers(n, str(db_path), partial(lexical_llms, pids)) as workers:
            asyncio.run(score_dictionary_runs(cfg, LexicalExplainer(), LexicalSimulator(),
                                              open_db(db_path), progress, workers))
        rows[n] = check_db(db_path).execute(ROWS).fetchall()
        assert progress.done == progress.total > 0
    assert rows[3] == rows[1] and len(rows[1]) == 3 * progress.total  # three scorers
    workers_seen = set(pids.read_text().split())
    assert len(workers_seen) == 2 and str(os.getpid()) not in workers_seen


def test_a_dead_worker_is_one_clear_error(tmp_path):
    _, dict_path = sparse_planted(tmp_path, n_fragments=200, lexical=True)
    cfg = ScoreConfig(dict_path, selftest=False, fragments=FragmentConfig(n_features=6))
    db_path = tmp_path / "r.db"
    with pytest.raises(AutointerpError, match="--workers process died.*rerun"):
        with Workers(2, str(db_path), dying_llms) as workers:
            asyncio.run(score_dictionary_runs(cfg, LexicalExplainer(), LexicalSimulator(),
                                              open_db(db_path), NullProgress(), workers))
    # Whatever was written stays; a rerun in one process completes the run.
    asyncio.run(score_dictionary_runs(cfg, LexicalExplainer(), LexicalSimulator(),
                                      open_db(db_path)))
    assert len(check_db(db_path).execute(ROWS).fetchall()) == 4


def test_score_with_workers_against_an_endpoint(tmp_path_factory, tmp_path):
    dictionary = random_dictionary(shared_inputs(tmp_path_factory).store, tmp_path / "dict", 20)
    with OracleEndpoint() as endpoint:
        one = run_cli(llm(dictionary, tmp_path / "one.db", endpoint.url))
        assert one.returncode == 0, one.stderr
        served, distinct = endpoint.requests, set(endpoint.distinct)
        endpoint.distinct.clear()
        two = run_cli(llm(dictionary, tmp_path / "two.db", endpoint.url) + ["--workers", "2"])
        assert two.returncode == 0, two.stderr
        assert endpoint.distinct == distinct  # the same requests, none left out
        # A request shared by features in different processes (one process's cache hits:
        # the oracle explains many features alike) may be made by each of them; nothing
        # else is made twice.
        hits = int(re.findall(r"cache hits (\d+)", one.stdout + one.stderr)[-1])
        assert served <= endpoint.requests - served <= served + hits
        assert "20/20" in two.stdout + two.stderr
        # The progress line counts the workers' calls too.
        calls = [int(re.findall(r"calls (\d+)", r.stdout + r.stderr)[-1]) for r in (one, two)]
        assert calls[0] <= calls[1] <= calls[0] + hits and calls[0] > 0
    dbs = [sqlite3.connect(tmp_path / f"{n}.db") for n in ("one", "two")]
    assert dbs[0].execute(ROWS).fetchall() == dbs[1].execute(ROWS).fetchall()
    calls = [sorted(d.execute("select key, response from llm_calls")) for d in dbs]
    assert calls[0] == calls[1]


def test_workers_refuse_an_in_process_model(tmp_path):
    for extra in (["--workers", "2"], ["--workers", "0", "--explainer", "lexical",
                                        "--scoring-backend", "lexical"]):
        result = run_cli(["score", "--dict", str(tmp_path / "missing"), "--db",
                          str(tmp_path / "r.db"), *extra])
        assert result.returncode == 1 and "--workers" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_explain_outputs_refuses_a_lexical_explainer(tmp_path, capsys, monkeypatch):
    """Output-centric explanations need an LLM explainer that steers in this process."""
    from tests.support.cli import run_main

    code, _, err = run_main(["score", "--dict", tmp_path / "missing", "--db", tmp_path / "r.db",
                             "--explainer", "lexical", "--explain-outputs"], capsys, monkeypatch)
    assert code == 1 and "--explain-outputs needs an LLM explainer" in err
    assert len(err.strip().splitlines()) == 1
