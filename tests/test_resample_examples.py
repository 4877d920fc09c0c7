"""`score --resample-examples N`: each explanation scored on N seeded draws of its held-out
examples. Draw 0 is today's draw (N = 1 changes no score and no run id); with N = 3 the
per-draw scores reach compare, whose variance split then has a draw part, and the parts
still sum to the total."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from autointerp.db import open_db
from autointerp.errors import BadInputError
from autointerp.llm.cache import CachedClient
from autointerp.results import compare
from autointerp.scoring.fragments import FragmentConfig, collect_fragments
from autointerp.scoring.pipeline import ScoreConfig, score_dictionary_runs
from autointerp.scoring.scorers.detection import DetectionScorer
from autointerp.scoring.scorers.lexical import LexicalExplainer, LexicalSimulator
from autointerp.scoring.scorers.simulation import LLMSimulator
from autointerp.scoring.verdicts import JudgeSettings, LLMJudge
from autointerp.scoring.workers import Workers
from tests.support.cli import check_db, error_line, run_cli
from tests.support.data import sparse_planted
from tests.support.llm import judge_endpoint

SCORERS = ("simulation", "detection", "fuzzing")


def _score(db_path, dict_path, n: int, workers=None, n_features: int = 150,
           n_explanations: int = 1):
    db = open_db(db_path)
    cfg = ScoreConfig(dict_path, scorers=("all",), selftest=False, resample_examples=n,
                      fragments=FragmentConfig(n_features=n_features),
                      explanations_per_feature=n_explanations)
    asyncio.run(score_dictionary_runs(cfg, LexicalExplainer(), LexicalSimulator(), db,
                                      workers=workers))
    return db


def lexical_llms(db):
    """A worker's make_llms (module level, so that it pickles)."""
    return LexicalExplainer(), LexicalSimulator(), []


@pytest.fixture(scope="module")
def dbs(tmp_path_factory):
    root = tmp_path_factory.mktemp("draws")
    _, dict_path = sparse_planted(root, n_fragments=200)
    return {n: _score(root / f"r{n}.db", dict_path, n) for n in (1, 3)}


def _rows(db) -> dict:
    runs = {r["id"]: r["scorer"] for r in db["runs"].rows}
    return {(runs[r["run_id"]], r["feature"]): r for r in db["features"].rows
            if r["status"] == "scored"}


def test_three_draws_give_the_split_a_draw_part(dbs):
    db = dbs[3]
    methods = compare.build_checks(db, compare.build_table(db)).methods.set_index("scorer")
    assert sorted(methods.index) == sorted(SCORERS) and (methods.n_draws == 3).all()
    # Lexical detection is perfect on every draw of this store (nothing varies at all);
    # simulation and fuzzing vary, and there the draws carry a part of the variance.
    assert (methods.loc[["simulation", "fuzzing"], "var_draw"] > 0).all(), methods.var_draw
    assert (methods.var_draw[methods.var_total > 0] > 0).all()
    parts = methods.var_feature + methods.var_explanation + methods.var_draw
    assert np.allclose(parts, methods.var_total, rtol=0, atol=1e-9)


def test_headline_is_the_mean_over_draws_and_draw_0_is_todays(dbs):
    one, three = _rows(dbs[1]), _rows(dbs[3])
    assert one.keys() == three.keys() and {s for s, _ in one} == set(SCORERS)
    moved = 0
    for key, row in three.items():
        (draws,) = json.loads(row["metrics"])["scores"]  # one explanation, three draws
        assert len(draws) == 3
        assert row["score"] == pytest.approx(np.nanmean([np.nan if d is None else d
                                                         for d in draws]))
        assert draws[0] == pytest.approx(one[key]["score"], abs=1e-12)
        moved += len(set(draws)) > 1
    assert moved > len(three) // 2  # the other draws are other examples


def test_one_draw_keeps_todays_run_ids_and_rows(dbs):
    for run in dbs[1]["runs"].rows:
        assert "resample_examples" not in run["config"]
    for row in dbs[1]["features"].rows:
        assert "scores" not in json.loads(row["metrics"] or "{}")
    ids1 = {r["scorer"]: r["id"] for r in dbs[1]["runs"].rows}
    ids3 = {r["scorer"]: r["id"] for r in dbs[3]["runs"].rows}
    assert ids1.keys() == ids3.keys() and all(ids1[s] != ids3[s] for s in ids1)


@pytest.mark.parametrize("n", [0, -2])
def test_bad_resample_examples_is_refused(tmp_path, n):
    with pytest.raises(BadInputError, match="--resample-examples must be at least 1"):
        ScoreConfig(tmp_path / "d", resample_examples=n)
    with pytest.raises(BadInputError, match="not to output"):
        ScoreConfig(tmp_path / "d", scorers=("simulation", "output"), resample_examples=2)


def test_bad_resample_examples_is_one_line_on_the_command_line(tmp_path):
    result = run_cli(["score", "--dict", tmp_path / "d", "--db", tmp_path / "r.db",
                      "--explainer", "lexical", "--scoring-backend", "lexical",
                      "--resample-examples", "0"])
    assert error_line(result) == "--resample-examples must be at least 1 (got 0)"


def test_workers_draw_the_same_examples(tmp_path):
    _, dict_path = sparse_planted(tmp_path, n_fragments=200)
    rows = {}
    for n in (1, 2):
        with Workers(n, str(tmp_path / f"{n}.db"), lexical_llms) as workers:
            _score(tmp_path / f"{n}.db", dict_path, 3, workers, n_features=6)
        rows[n] = check_db(tmp_path / f"{n}.db").execute(
            "select run_id, feature, score, metrics from features order by 1, 2").fetchall()
    assert rows[2] == rows[1] and all('"scores"' in r[3] for r in rows[1])


def test_draws_of_several_explanation_samples(tmp_path):
    _, dict_path = sparse_planted(tmp_path, n_fragments=200)
    db = _score(tmp_path / "r.db", dict_path, 3, n_features=6, n_explanations=2)
    methods = compare.build_checks(db, compare.build_table(db)).methods
    assert (methods.n_explanations == 2).all() and (methods.n_draws == 3).all()
    parts = methods.var_feature + methods.var_explanation + methods.var_draw
    assert np.allclose(parts, methods.var_total, rtol=0, atol=1e-9)


def _detect(fs, client, draws: int):
    scorer = DetectionScorer(LLMJudge(LLMSimulator(client, "logprobs", scale_max=10),
                                      "detection"), JudgeSettings(), draws)

    async def main():
        await scorer.prepare()
        return [await scorer.score(f"feature {ff.feature}", ff, 5) for ff in fs.features[:2]]
    return asyncio.run(main())


def test_llm_draws_go_through_the_cache(tmp_path):
    from autointerp.dictionaries.sources import load_dictionary
    from autointerp.harvest.store import ActivationStore

    store, dict_path = sparse_planted(tmp_path)
    fs = collect_fragments(load_dictionary(dict_path), ActivationStore(store), FragmentConfig())
    db = open_db(tmp_path / "cache.db")

    def cached(policy: str, seed: int = 0) -> CachedClient:
        inner = judge_endpoint({}, policy, seed)
        inner.name = "judge"  # one model's cache, whatever it answers
        return CachedClient(inner, db)

    one = cached("always1")
    _detect(fs, one, 1)
    first = cached("random", 1)
    records = _detect(fs, first, 3)
    # draw 0 asks exactly today's prompts (answered from the cache), the others new ones
    assert first.hits == one.calls > 0 and first.calls > 0
    again = cached("random", 2)
    rerun = _detect(fs, again, 3)
    assert again.calls == 0 and again.inner.requests == []
    assert [(r.score, r.auroc, r.details["draw_scores"]) for r in rerun] == \
        [(r.score, r.auroc, r.details["draw_scores"]) for r in records]
