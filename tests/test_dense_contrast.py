"""Detection and fuzzing for dense features: the threshold rule where a feature has too
few all-zero fragments, the zero rule wherever it applies, the rule recorded per feature
and kept apart in compare's table."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch

from autointerp.db import open_db
from autointerp.scoring.contrast import DENSE_HIGH, DENSE_LOW
from autointerp.scoring.fragments import FeatureFragments
from autointerp.scoring.pipeline import ScoreConfig, score_dictionary_runs
from autointerp.scoring.scorers.detection import DetectionScorer, detection_examples
from autointerp.scoring.scorers.examples import contrasted_examples
from autointerp.scoring.scorers.fuzzing import fuzzing_examples
from autointerp.scoring.scorers.lexical import LexicalExplainer, LexicalJudge, LexicalSimulator
from autointerp.scoring.verdicts import JudgeSettings
from autointerp.types import Fragment
from tests.support.data import N_LIVE, make_store, make_tokenizer, sparse_planted


def dense_ff(seed: int = 0, n: int = 50) -> FeatureFragments:
    """A feature above zero at every token (a PCA direction's), with spikes on some tokens."""
    rng = np.random.default_rng(seed)
    held = []
    for i in range(n):
        acts = 0.05 + 0.1 * rng.random(64)
        acts[rng.choice(64, size=int(rng.integers(0, 4)), replace=False)] += rng.uniform(1, 5)
        held.append(Fragment(tuple(f"t{i}_{k}" for k in range(64)), tuple(acts.tolist()), i))
    top = tuple(sorted(held, key=lambda f: -max(f.activations))[:10])
    return FeatureFragments(7, n, top, (), tuple(held), ())


def test_dense_feature_uses_the_threshold_rule_with_stated_thresholds():
    ff, s = dense_ff(), JudgeSettings()
    positives, negatives, c = contrasted_examples(ff, s)
    assert c.rule == "threshold" and 0 < c.low < c.high
    maxima = [max(f.activations[a:a + 21]) for f in ff.held_out for a in (0, 21, 42)]
    assert c.low == pytest.approx(np.quantile(maxima, DENSE_LOW))
    assert c.high == pytest.approx(np.quantile(maxima, DENSE_HIGH))
    assert len(positives) == len(negatives) >= s.min_per_class
    assert all(max(e.activations) >= c.high and e.label == 1 for e in positives)
    assert all(max(e.activations) <= c.low and e.label == 0 for e in negatives)
    d = c.details()
    assert d["rule"] == "threshold" and 0 < d["low_fraction"] < d["high_fraction"] <= 1
    examples = detection_examples(ff, s)
    assert sum(e.label for e in examples) == len(positives)


def test_dense_fuzzing_marks_high_tokens_and_mismarks_low_ones():
    ff, s = dense_ff(1), JudgeSettings()
    _, _, c = contrasted_examples(ff, s)
    examples = fuzzing_examples(ff, s)
    right = [e for e in examples if e.label == 1]
    assert right and all(all(e.activations[i] >= c.high for i in e.marks) for e in right)
    wrong = [e for e in examples if e.label == 0 and e.quantile >= 0]
    assert all(all(e.activations[i] <= c.low for i in e.marks) for e in wrong)


def test_zero_rule_kept_wherever_it_applies(tmp_path):
    from autointerp.dictionaries.sources import load_dictionary
    from autointerp.harvest.store import ActivationStore
    from autointerp.scoring.fragments import FragmentConfig, collect_fragments

    store, dict_path = sparse_planted(tmp_path)
    fs = collect_fragments(load_dictionary(dict_path), ActivationStore(store), FragmentConfig())
    for ff in fs.features:
        pos, neg, c = contrasted_examples(ff, JudgeSettings())
        assert c.rule == "zero" and all(max(e.activations) == 0 for e in neg)


def dense_lexical(path, n_fragments: int = 160, d_model: int = 8, seed: int = 0):
    """Every feature above zero on every token (so no all-zero fragment), and features
    0..N_LIVE-1 spiking where their own token id occurs: dense, yet explainable by token."""
    from autointerp.dictionaries.dictionary import Dictionary

    tokenizer = make_tokenizer()
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, len(tokenizer), size=n_fragments * 64).astype(np.int32)
    spikes = rng.random(len(ids)) < 0.2  # each live feature's token: 5% of all tokens
    ids[spikes] = 10 + rng.integers(0, N_LIVE, int(spikes.sum()))
    acts = 0.01 + 0.01 * torch.rand(n_fragments * 64, d_model,
                                    generator=torch.Generator().manual_seed(seed))
    for j in range(N_LIVE):
        pos = np.flatnonzero(ids == 10 + j)
        acts[pos, j] = torch.from_numpy(rng.uniform(1.0, 5.0, len(pos))).float()
    W = torch.eye(d_model)
    d = Dictionary(W, torch.zeros(d_model), W.clone(), torch.zeros(d_model),
                   meta={"method": "pca", "model": "test-model", "hook": "resid.0", "layer": 0,
                         "store": str(path / "store")})
    return make_store(path / "store", acts, acts, ids, tokenizer=tokenizer), d.save(path / "dict")


def test_dense_dictionary_is_scored_and_compare_names_the_rule(tmp_path):
    from autointerp.results.compare import build_table, write_comparison

    _, dict_path = dense_lexical(tmp_path)
    db = open_db(tmp_path / "r.db")
    cfg = ScoreConfig(dict_path, scorers=("detection", "fuzzing"), selftest=False)
    sums = asyncio.run(score_dictionary_runs(cfg, LexicalExplainer(), LexicalSimulator(), db))
    assert all(s.n_failed == 0 and s.n_scored == 8 for s in sums)  # refused before: no zeros
    det = sums[0]
    rows = list(db.query("select score, metrics from features where run_id = ?", [det.run_id]))
    rules = [json.loads(r["metrics"])["negative_rule"][0] for r in rows]
    assert {r["rule"] for r in rules} == {"threshold"}
    live = sorted(r["score"] for r in rows)[-N_LIVE:]
    assert min(live) >= 0.9  # the spiking token tells high windows from low ones
    table = build_table(db)
    assert set(table.negatives) == {"threshold"}
    text = write_comparison(db, tmp_path / "out").paths["table.md"].read_text()
    assert "| threshold |" in text


def test_mixed_rules_get_a_row_each(tmp_path):
    """Sparse features (zero rule) and dense ones (threshold rule) of one run: two rows."""
    from autointerp.results.compare import build_table

    _, sparse_dict = sparse_planted(tmp_path / "s", lexical=True)
    _, dense_dict = dense_lexical(tmp_path / "d")
    db = open_db(tmp_path / "r.db")
    for path in (sparse_dict, dense_dict):
        asyncio.run(score_dictionary_runs(ScoreConfig(path, scorers=("detection",),
                                                      selftest=False),
                                          LexicalExplainer(), LexicalSimulator(), db))
    run_id = next(iter(db.query("select id from runs limit 1")))["id"]
    db.execute("update features set run_id = ?, feature = feature + 100 where run_id != ?",
               [run_id, run_id])  # one run whose features used both rules
    table = build_table(db)
    mine = table[table.run_id == run_id]
    assert sorted(mine.negatives) == ["threshold", "zero"]
    assert mine.n_scored.sum() == db["features"].count


def test_lexical_judge_scores_dense_examples():
    ff = dense_ff(2)
    scorer = DetectionScorer(LexicalJudge("detection"))
    rec = asyncio.run(scorer.score("tokens \"zzz\" (10)", ff, 5))
    assert rec.details["negative_rule"]["rule"] == "threshold"
