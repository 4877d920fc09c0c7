"""Fuzzing: marks on the firing tokens (label 1) against marks elsewhere (label 0), with
judges whose scores we know, through the LLM client contract."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from autointerp.dictionaries.sources import load_dictionary
from autointerp.harvest.store import ActivationStore
from autointerp.scoring.fragments import FragmentConfig, collect_fragments
from autointerp.scoring.scorers.fuzzing import FuzzingScorer, fuzzing_examples
from autointerp.scoring.scorers.lexical import LexicalJudge
from autointerp.scoring.scorers.simulation import LLMSimulator
from autointerp.scoring.verdicts import Example, JudgeSettings, LLMJudge, render_example
from tests.support.data import N_LIVE, sparse_planted
from tests.support.llm import judge_endpoint


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    store, dict_path = sparse_planted(tmp_path_factory.mktemp("fuzz"))
    return collect_fragments(load_dictionary(dict_path), ActivationStore(store), FragmentConfig())


def test_marks_sit_where_the_label_says(fs):
    for ff in fs.features:
        examples = fuzzing_examples(ff, JudgeSettings())
        shown = {f.index for f in ff.explainer_fragments()}
        assert shown.isdisjoint(e.fragment for e in examples)
        pos = [e for e in examples if e.label == 1]
        wrong = [e for e in examples if e.label == 0 and e.quantile >= 0]
        quiet = [e for e in examples if e.quantile < 0]
        assert pos and wrong and quiet and all(e.marks for e in examples)
        assert all(set(e.marks) == {i for i, a in enumerate(e.activations) if a > 0} for e in pos)
        assert all(all(e.activations[i] == 0 for i in e.marks) for e in wrong)
        assert all(max(e.activations) == 0 for e in quiet)
        # Right and wrong marks both cover the activation quantiles.
        assert len({e.quantile for e in pos}) >= 8 and len({e.quantile for e in wrong}) >= 8


def _score_all(fs, client):
    scorer = FuzzingScorer(LLMJudge(LLMSimulator(client, "logprobs", scale_max=10), "fuzzing"))

    async def main():
        return await asyncio.gather(*(scorer.score(f"feature {ff.feature}", ff, 5)
                                      for ff in fs.features))
    return asyncio.run(main())


def _truth(fs):
    return {(f"feature {ff.feature}", render_example(e)): e.label
            for ff in fs.features for e in fuzzing_examples(ff, JudgeSettings())}


def test_oracle_judge_scores_one(fs):
    records = _score_all(fs, judge_endpoint(_truth(fs), "oracle"))
    assert [r.score for r in records] == [1.0] * N_LIVE
    assert [r.auroc for r in records] == [1.0] * N_LIVE


def test_random_judge_scores_about_half(fs):
    records = _score_all(fs, judge_endpoint({}, "random", seed=2))
    assert 0.4 < np.mean([r.score for r in records]) < 0.6
    assert 0.4 < np.mean([r.auroc for r in records]) < 0.6


def test_always_one_judge_scores_exactly_half(fs):
    records = _score_all(fs, judge_endpoint({}, "always1"))
    assert [r.score for r in records] == [0.5] * N_LIVE
    assert [r.auroc for r in records] == [0.5] * N_LIVE


def test_corpus_text_cannot_forge_marks():
    ex = Example(("a<", "<b", ">> c", " <<d>>", " e"), (0, 0, 0, 1, 0), 1, 0, 0, marks=(3,))
    text = render_example(ex)
    assert text.count("<<") == 1 and text.count(">>") == 1
    inside = text.split("<<")[1].split(">>")[0]
    assert "d" in inside and "b" not in inside and "e" not in inside


def test_lexical_fuzzing_reference():
    toks = (" the", " cat", " sat", " on", " the", " mat")
    right = Example(toks, (0, 5, 0, 0, 0, 0), 1, 0, 0, marks=(1,))
    wrong = Example(toks, (0, 5, 0, 0, 0, 0), 0, 0, 0, marks=(3,))
    verdicts = asyncio.run(LexicalJudge("fuzzing").judge('tokens "cat" (10)', [right, wrong]))
    assert [v.answer for v in verdicts] == [1, 0] and [v.p1 for v in verdicts] == [1.0, 0.0]
