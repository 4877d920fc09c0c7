"""compare: the table, the differences and the plot, checked against a direct
computation from a small results database built here."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from autointerp.db import open_db
from autointerp.results import compare
from autointerp.results.plot import plot_scores
from autointerp.scoring.stats import mean_ci
from tests.support.data import RUNS, make_results_db


@pytest.fixture
def failing_db(tmp_path):
    return make_results_db(tmp_path / "fail.db", llm_selftest_passed=False)


def test_table_numbers_equal_direct_computation(failing_db, tmp_path):
    table = compare.build_table(failing_db, seed=7)
    assert len(table) == len(RUNS)
    con = sqlite3.connect(tmp_path / "fail.db")
    for row in table.itertuples(index=False):
        scores = pd.read_sql_query(
            "SELECT f.score, f.score_top, f.score_random FROM features f WHERE f.run_id = ? "
            "AND f.status = 'scored'", con, params=[row.run_id])
        n_failed = con.execute("SELECT count(*) FROM features WHERE run_id = ? AND status = "
                               "'failed'", [row.run_id]).fetchone()[0]
        assert row.n_scored == len(scores) and row.n_failed == n_failed
        for prefix, column in (("score", "score"), ("top", "score_top"), ("random", "score_random")):
            values = scores[column].to_numpy()
            res = scipy.stats.bootstrap((values,), np.mean, n_resamples=10_000,
                                        rng=np.random.default_rng(7))
            assert getattr(row, f"{prefix}_mean") == pytest.approx(values.mean(), abs=1e-12)
            assert (getattr(row, f"{prefix}_lo"), getattr(row, f"{prefix}_hi")) == pytest.approx(
                (res.confidence_interval.low, res.confidence_interval.high), abs=0.02)
            assert getattr(row, f"{prefix}_lo") < values.mean() < getattr(row, f"{prefix}_hi")
        l0, fvu = con.execute("SELECT l0, fvu FROM dictionaries WHERE id = ?",
                              [row.dictionary_id]).fetchone()
        assert (row.l0, row.fvu) == (l0, fvu)
    assert table.set_index("method").loc["pca (lexical)", "reference"]
    assert not table.set_index("method").loc["pca", "reference"]


def test_mean_ci_is_the_bootstrap_we_check_against():
    values = np.random.default_rng(1).random(30)
    mean, lo, hi = mean_ci(values, 3)
    assert mean == pytest.approx(values.mean()) and lo < mean < hi
    assert hi - lo < 0.3


def test_differences_pair_shared_features_of_one_dictionary(failing_db):
    diffs = compare.build_differences(failing_db, seed=0)
    pairs = {(frozenset((d.method_a, d.method_b)), d.hook): d
             for d in diffs.itertuples(index=False)}
    # Same dictionary, LLM vs lexical: paired over the 10 shared features.
    lex = pairs[(frozenset(("pca", "pca (lexical)")), "resid.3")]
    assert (lex.method_a, lex.method_b) == ("pca", "pca (lexical)")
    assert lex.resampling == "paired over 10 shared features"
    con = failing_db.conn
    a = [r[0] for r in con.execute("SELECT score FROM features WHERE run_id='run1' ORDER BY feature")]
    b = [r[0] for r in con.execute("SELECT score FROM features WHERE run_id='run2' ORDER BY feature")]
    assert lex.difference == pytest.approx(np.mean(np.subtract(a, b)))
    # Different dictionaries, same scorer: independent; never across hook points.
    sae_pca = pairs[(frozenset(("pca", "topk")), "resid.3")]
    assert sae_pca.resampling == "independent" and sae_pca.lo < sae_pca.difference < sae_pca.hi
    assert all(d.hook == "resid.3" or {d.method_a, d.method_b} == {"topk", "neurons"}
               for d in diffs.itertuples(index=False))
    # topk(resid.3) vs pca (lexical) share neither scorer nor dictionary.
    assert not any({d.method_a, d.method_b} == {"topk", "pca (lexical)"}
                   for d in diffs.itertuples(index=False))


def test_failed_selftest_warns_in_every_file(failing_db, tmp_path):
    out = compare.write_comparison(failing_db, tmp_path / "results", seed=0)
    md = (tmp_path / "results" / "table.md").read_text()
    assert md.startswith("> **WARNING: simulator inprocess:tiny (all-at-once) FAILED its self-test")
    assert "not meaningful" in md.splitlines()[0]
    assert "right-explanation mean 0.210" in md
    assert "> Note: the self-test does not apply to simulator lexical (lexical)" in md
    assert md.count("WARNING") == 1  # the lexical reference is not flagged
    csv = pd.read_csv(tmp_path / "results" / "table.csv")
    by_sim = csv.groupby("simulator").selftest.unique()
    assert list(by_sim["inprocess:tiny"]) == [compare.FAILED]
    assert list(by_sim["lexical"]) == ["n/a (lexical)"]
    assert (tmp_path / "results" / "differences.md").read_text().startswith("> **WARNING")
    assert (tmp_path / "results" / "scores.png").stat().st_size > 10_000
    assert out.verdicts[0].startswith("WARNING")


def test_plot_draws_the_warning_and_groups_layers(failing_db):
    table = compare.build_table(failing_db)
    fig, texts = plot_scores(table, compare.verdict_lines(failing_db))
    fig.canvas.draw()  # the text must survive layout, not only exist
    drawn = [t for t in texts if t.get_visible() and t.get_window_extent().width > 100]
    assert drawn and "FAILED its self-test" in drawn[0].get_text()
    assert "not meaningful" in drawn[0].get_text().replace("\n", " ")
    assert drawn[0].get_bbox_patch().get_facecolor()[:3] == pytest.approx((1.0, 0.839, 0.839),
                                                                           abs=0.01)
    ax = fig.axes[0]
    group_titles = {t.get_text() for t in ax.texts}
    assert {"resid.3", "resid.5"} <= group_titles
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert len(ticks) == len(RUNS) and any("lexical" in t for t in ticks)
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1  # the one lexical reference row


def test_passed_selftest_says_so_with_figures(tmp_path):
    db = make_results_db(tmp_path / "pass.db", llm_selftest_passed=True)
    lines = compare.verdict_lines(db)
    assert not any(ln.startswith("WARNING") for ln in lines)
    assert any("simulator inprocess:tiny" in ln and "right-explanation mean 0.800" in ln
               and "gap 0.700" in ln for ln in lines)
    fig, texts = plot_scores(compare.build_table(db), lines)
    assert all("FAILED" not in t.get_text() for t in texts) and len(texts) == 2
    assert texts[0].get_text().startswith("Self-test passed")
    assert texts[1].get_text().startswith("Note: the self-test does not apply")


def test_cli_compare_prints_warning_and_table(failing_db, tmp_path):
    from typer.testing import CliRunner

    from autointerp.cli import app

    res = CliRunner().invoke(app, ["compare", "--db", str(tmp_path / "fail.db"),
                                   "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    words = " ".join(res.output.split())  # rich wraps at the runner's 80 columns
    assert "WARNING: simulator inprocess:tiny (all-at-once) FAILED its self-test" in words
    assert "Note: the self-test does not apply to simulator lexical" in words
    assert "neurons" in words
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == [
        "differences.md", "scores.png", "table.csv", "table.md"]


def test_cli_compare_empty_db_is_a_one_line_error(tmp_path):
    open_db(tmp_path / "empty.db")
    res = subprocess.run([str(Path(sys.executable).parent / "autointerp"), "compare", "--db",
                          str(tmp_path / "empty.db"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.startswith("error: ") and "no scored runs" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_same_selftest_outcome_on_two_stores_is_said_once(tmp_path):
    db = make_results_db(tmp_path / "two.db", llm_selftest_passed=False)
    row = dict(db["selftests"].get("st-llm"))
    db["selftests"].insert({**row, "id": "st-llm-other-store"})
    db["runs"].update("run4", {"selftest_id": "st-llm-other-store", "label": "topk, random-init"})
    db["runs"].update("run3", {"selftest_id": None})  # topk at resid.5
    lines = compare.verdict_lines(db)
    warnings = [ln for ln in lines if ln.startswith("WARNING")]
    assert len(warnings) == 1
    assert warnings[0].endswith("Scores of pca, topk, topk, random-init are not meaningful.")
    assert lines[-1] == ("Note: no simulator self-test is recorded for topk; "
                         "their scores are unvalidated.")
