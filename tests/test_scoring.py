import math

import numpy as np
import pytest
from scipy import stats

from autointerp.scoring.stats import correlation, mean_ci, score_simulation
from autointerp.types import Fragment, Simulation


def frag(acts):
    return Fragment(tuple(f"t{i}" for i in range(len(acts))), tuple(float(a) for a in acts))


def sim(preds):
    return Simulation(tuple(tuple(float(x) for x in p) for p in preds), "test", "test")


def test_pooled_correlation_matches_hand_computation():
    # Pooled over both fragments: true = 0 2 0 | 0 0 1, predicted = 1 3 0 | 0 1 1.
    # means: t 0.5, p 1.0. Deviations t: -.5 1.5 -.5 -.5 -.5 .5; p: 0 2 -1 -1 0 0.
    # cov = 0 + 3 + .5 + .5 + 0 + 0 = 4; var_t = .25*4 + 2.25 + .25 = 3.5; var_p = 0+4+1+1 = 6.
    expected = 4 / math.sqrt(3.5 * 6)
    s = score_simulation([frag([0, 2, 0]), frag([0, 0, 1])], sim([[1, 3, 0], [0, 1, 1]]), n_top=1)
    assert s.all == pytest.approx(expected)
    assert s.top == pytest.approx(np.corrcoef([0, 2, 0], [1, 3, 0])[0, 1])
    assert s.random == pytest.approx(np.corrcoef([0, 0, 1], [0, 1, 1])[0, 1])
    assert not s.constant


def test_pooling_is_not_the_mean_of_per_fragment_correlations():
    frags = [frag([0, 1, 0, 0]), frag([0, 0, 5, 0])]
    preds = [[0, 1, 0, 0], [0, 0, 1, 0]]
    s = score_simulation(frags, sim(preds))
    assert s.all < 0.99  # each fragment alone correlates perfectly; pooled the scale differs
    assert math.isnan(s.top) and math.isnan(s.random)


def test_constant_prediction_scores_zero_with_flag():
    s = score_simulation([frag([0, 3, 1]), frag([1, 0, 0])], sim([[2, 2, 2], [2, 2, 2]]), n_top=1)
    assert (s.all, s.top, s.random, s.constant) == (0.0, 0.0, 0.0, True)


def test_constant_truth_is_undefined_not_zero():
    r, constant = correlation([0, 0, 0], [1, 2, 3])
    assert math.isnan(r) and not constant


def test_misaligned_predictions_raise():
    with pytest.raises(ValueError):
        score_simulation([frag([0, 1, 2])], sim([[0, 1]]))


def test_mean_ci_equals_scipy_bootstrap():
    values = np.random.default_rng(3).normal(0.3, 0.2, size=40)
    mean, lo, hi = mean_ci(values, seed=7)
    ref = stats.bootstrap((values,), np.mean, n_resamples=10_000, confidence_level=0.95,
                          rng=np.random.default_rng(7))
    assert mean == pytest.approx(values.mean())
    assert (lo, hi) == (ref.confidence_interval.low, ref.confidence_interval.high)
    assert lo < mean < hi
    assert mean_ci(values, seed=8) != (mean, lo, hi)  # the seed matters


def test_mean_ci_degenerate_inputs():
    assert all(math.isnan(x) for x in mean_ci([]))
    m, lo, hi = mean_ci([0.4])
    assert m == 0.4 and math.isnan(lo) and math.isnan(hi)
    assert mean_ci([0.2, 0.2, 0.2]) == pytest.approx((0.2, 0.2, 0.2))
    assert mean_ci([0.1, float("nan"), 0.3])[0] == pytest.approx(0.2)
