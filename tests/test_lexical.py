import asyncio

import pytest

from autointerp.dictionaries.sources import load_dictionary
from autointerp.harvest.store import ActivationStore
from autointerp.scoring.explain import ExplanationFailed
from autointerp.scoring.fragments import FragmentConfig, collect_fragments
from autointerp.scoring.scorers.lexical import LexicalExplainer, LexicalSimulator, parse_explanation
from autointerp.scoring.stats import score_simulation
from autointerp.types import Fragment
from tests.support.data import PLANTED_WORDS, make_planted


def lexical_score(ff):
    e = asyncio.run(LexicalExplainer().explain(ff.explainer_fragments()))
    scoring = ff.scoring_fragments()
    sim = asyncio.run(LexicalSimulator().simulate(e.text, scoring))
    return e.text, score_simulation(scoring, sim, n_top=5)


@pytest.fixture(scope="module")
def fragment_set(tmp_path_factory):
    store, dict_path, _ = make_planted(tmp_path_factory.mktemp("lex"))
    return collect_fragments(load_dictionary(dict_path), ActivationStore(store), FragmentConfig())


def test_planted_token_features_score_at_least_0_9(fragment_set):
    for ff in fragment_set.features[:len(PLANTED_WORDS)]:
        text, score = lexical_score(ff)
        assert parse_explanation(text) == {PLANTED_WORDS[ff.feature]: 10.0}
        assert score.all >= 0.9 and score.top >= 0.9


def test_random_noise_feature_scores_about_zero(fragment_set):
    noise = fragment_set.features[len(PLANTED_WORDS)]
    _, score = lexical_score(noise)
    assert abs(score.all) < 0.15


def test_explanation_lists_the_tokens_carrying_most_activation():
    f = Fragment(("a", " the", "b", " The", "c", "x"), (0, 4, 0, 6, 1, 0.5))
    e = asyncio.run(LexicalExplainer(share=0.8).explain([f]))
    assert parse_explanation(e.text) == {"the": 10.0}
    e = asyncio.run(LexicalExplainer(share=0.99).explain([f]))
    assert parse_explanation(e.text) == {"the": 10.0, "c": 2.0, "x": 1.0}
    assert e == asyncio.run(LexicalExplainer(share=0.99).explain([f]))  # deterministic


def test_quotes_and_odd_tokens_round_trip():
    f = Fragment(('"', "\n", " ok"), (5, 5, 0))
    e = asyncio.run(LexicalExplainer().explain([f]))
    assert "\n" not in e.text
    sim = asyncio.run(LexicalSimulator().simulate(e.text, [f]))
    assert sim.predictions == ((10.0, 10.0, 0.0),)


def test_reads_quoted_words_of_other_explanations():
    assert parse_explanation("the word 'the'") == {"the": 10.0}
    with pytest.raises(Exception, match="no tokens"):
        asyncio.run(LexicalSimulator().simulate("digits and numbers", []))


def test_zero_feature_cannot_be_explained():
    with pytest.raises(ExplanationFailed):
        asyncio.run(LexicalExplainer().explain([Fragment(("a",), (0.0,))]))
