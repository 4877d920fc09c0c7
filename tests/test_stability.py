"""Stability in compare: the share of bootstrap resamples in which each ordering holds
(an unstable one marked, a stable one not), Kendall tau of the ranking, a variance split
whose parts sum to the total, and each method's margin over the random floor."""

from __future__ import annotations

import numpy as np
import pytest

from autointerp.db import dumps, now, open_db
from autointerp.results import compare
from autointerp.results.stability import pair_orders, ranking_tau, variance_split

# method -> (dictionary method, per-feature scores: mean, spread)
METHODS = {"topk": ("topk", 0.60, 0.05), "pca": ("pca", 0.59, 0.05),
           "random": ("random", 0.20, 0.05)}


def results_db(path, n_features: int = 20, n_explanations: int = 1, seed: int = 0):
    """topk and pca overlap (an unstable order); both are far above random (stable)."""
    rng = np.random.default_rng(seed)
    db = open_db(path)
    for label, (method, mean, sd) in METHODS.items():
        db["dictionaries"].insert({"id": label, "path": f"/d/{label}", "method": method,
                                   "model": "tiny", "hook": "resid.3", "layer": 3,
                                   "n_features": 64, "meta": "{}", "created_at": now()})
        db["runs"].insert({"id": f"run-{label}", "dictionary_id": label, "label": label,
                           "explainer": "llm:x", "simulator": "llm:x", "simulator_mode": "json",
                           "config": "{}", "n_sampled": n_features, "n_skipped": 0,
                           "scorer": "detection", "created_at": now()})
        for f in range(n_features):
            per = (mean + sd * rng.standard_normal(n_explanations)).tolist()
            db["features"].insert({
                "run_id": f"run-{label}", "feature": f, "status": "scored", "reason": None,
                "score": float(np.mean(per)), "fragments": "{}", "created_at": now(),
                "metrics": dumps({"scores": per} if n_explanations > 1 else {})})
    return db


def test_unstable_ordering_is_marked_and_stable_one_is_not(tmp_path):
    db = results_db(tmp_path / "r.db")
    out = compare.write_comparison(db, tmp_path / "out")
    checks = compare.build_checks(db, out.table)
    shares = {(p.higher, p.lower): p for p in checks.pairs.itertuples(index=False)}
    unstable = shares.get(("topk", "pca")) or shares[("pca", "topk")]
    assert unstable.share < 0.95 and not unstable.stable
    assert shares[("topk", "random")].share == 1.0 and shares[("topk", "random")].stable
    text = out.paths["table.md"].read_text()
    marked = [ln for ln in text.splitlines() if ln.startswith("- ") and "**UNSTABLE**" in ln]
    assert len(marked) == 1 and "topk" in marked[0] and "pca" in marked[0]
    assert "topk > random" in text and "holds in 100.0%: stable" in text


def test_variance_parts_sum_to_the_total():
    rng = np.random.default_rng(1)
    scores = [rng.normal(rng.normal(0.5, 0.2), 0.1, size=(4, 3)) for _ in range(30)]
    v = variance_split(scores)
    assert (v.n_features, v.n_explanations, v.n_draws) == (30, 4, 3)
    assert abs(v.feature + v.explanation + v.draw - v.total) < 1e-9
    assert v.total == pytest.approx(np.var(np.stack(scores)))
    assert v.feature > v.explanation > 0 and v.draw > 0


def test_explanation_samples_are_resampled_too(tmp_path):
    db = results_db(tmp_path / "r.db", n_explanations=3)
    checks = compare.build_checks(db, compare.build_table(db))
    m = checks.methods.set_index("method")
    assert (m.n_explanations == 3).all()
    assert np.allclose(m.var_feature + m.var_explanation + m.var_draw, m.var_total, atol=1e-9)


def test_kendall_tau_of_a_clear_ranking_is_one():
    methods = {"a": [[0.9]] * 10, "b": [[0.5]] * 10, "c": [[0.1]] * 10}
    assert ranking_tau(methods)[0] == 1.0
    assert all(p.share == 1.0 for p in pair_orders(methods))


def test_margin_over_the_random_floor_has_a_ci(tmp_path):
    db = results_db(tmp_path / "r.db")
    checks = compare.build_checks(db, compare.build_table(db))
    m = checks.margins.set_index("method")
    assert set(m.index) == {"topk", "pca"} and (m.floor == "random").all()
    assert 0.3 < m.loc["topk", "margin"] < 0.5 and m.loc["topk", "lo"] > 0.3
    assert m.loc["topk", "lo"] < m.loc["topk", "margin"] < m.loc["topk", "hi"]
    assert "Margin over the random floor" in checks.text and "above the floor" in checks.text
