"""compare with several scorers: a score column with its CI per scorer, differences only
within a scorer, a plot panel per scorer, per-scorer self-test warnings, costs."""

from __future__ import annotations

import asyncio

import pytest

from autointerp.db import dumps, now, open_db
from autointerp.results import compare
from autointerp.results.plot import plot_scores
from autointerp.scoring.fragments import FragmentConfig
from autointerp.scoring.pipeline import ScoreConfig, score_dictionary_runs
from autointerp.scoring.scorers.lexical import LexicalExplainer, LexicalSimulator
from tests.support.data import sparse_planted


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    _, dict_path = sparse_planted(root, n_fragments=200, lexical=True)
    db = open_db(root / "r.db")
    for label, seed in (("sae", 0), ("other", 1)):
        cfg = ScoreConfig(dict_path, scorers=("all",), label=label, selftest=False,
                          fragments=FragmentConfig(seed=seed))
        asyncio.run(score_dictionary_runs(cfg, LexicalExplainer(), LexicalSimulator(), db))
    return db


def test_score_column_with_ci_per_scorer(db):
    table = compare.build_table(db)
    assert list(dict.fromkeys(table.scorer)) == ["simulation", "detection", "fuzzing"]
    wide = compare.scorer_columns(table)
    assert len(wide) == 2 and all({"simulation", "detection", "fuzzing"} <= set(r) for r in wide)
    det = table[table.scorer == "detection"].iloc[0]
    assert wide[0]["detection"] == compare._fmt_ci(det.score_mean, det.score_lo, det.score_hi)
    assert det.score_mean == pytest.approx(1.0) and det.auroc_mean == pytest.approx(1.0)
    assert (table.n_calls_per_feature == 0).all()  # the lexical reference calls no LLM


def test_differences_only_within_a_scorer(db):
    diffs = compare.build_differences(db)
    assert sorted(diffs.scorer) == ["detection", "fuzzing", "simulation"]
    md = compare.differences_markdown(diffs, [], 0)
    assert "| detection |" in md and "| fuzzing |" in md


def test_plot_has_a_panel_per_scorer(db):
    fig, _ = plot_scores(compare.build_table(db), [])
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["score: corr(simulated, true activation)",
                      "detection: balanced accuracy (chance 0.5)",
                      "fuzzing: balanced accuracy (chance 0.5)"]
    assert all(len(ax.get_xticklabels()) == 2 for ax in fig.axes)


def test_failed_detection_selftest_warns_on_detection_rows_only(db, tmp_path):
    db["selftests"].insert({
        "id": "st-det", "simulator": "inprocess:tiny", "simulator_mode": "all-at-once",
        "scorer": "detection", "right_mean": 0.55, "right_lo": 0.5, "right_hi": 0.6,
        "wrong_mean": 0.5, "wrong_lo": 0.45, "wrong_hi": 0.55, "gap_mean": 0.05, "gap_lo": 0.0,
        "gap_hi": 0.1, "passed": 0, "thresholds": dumps({"right": 0.75, "gap": 0.2}),
        "details": "{}", "created_at": now()}, replace=True)
    db.execute("update runs set selftest_id = 'st-det' where scorer = 'detection' and label = 'sae'")
    db.conn.commit()
    lines = compare.verdict_lines(db)
    assert lines[0].startswith("WARNING: judge inprocess:tiny (all-at-once) FAILED its self-test "
                               "for detection")
    assert lines[0].endswith("Detection scores of sae are not meaningful.")
    out = compare.write_comparison(db, tmp_path / "out")
    md = out.paths["table.md"].read_text()
    assert md.startswith("> **WARNING") and "## detection" in md and "## fuzzing" in md
    assert "calls / feature" in md
    assert out.paths["differences.md"].read_text().startswith("> **WARNING")
