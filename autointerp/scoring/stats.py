"""Scores: how well simulated activations track the true ones (Bills et al. 2023).

The score of an explanation is the Pearson correlation between true and simulated
activations, pooled over every token of the scoring fragments (5 top and 5 random
in Cunningham et al. 2023), and also over the top and the random ones alone.
Per dictionary the scores are summarised as a mean with a bootstrap 95% CI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from autointerp.types import Fragment, Score, Simulation

N_RESAMPLES = 10_000


def correlation(true: Sequence[float], predicted: Sequence[float]) -> tuple[float, bool]:
    """Pearson r, and whether the prediction was constant. A constant prediction carries
    no information about the feature, so it scores 0 (flagged) rather than NaN. A constant
    truth (random fragments where the feature never fires) leaves r undefined: NaN."""
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"true {t.shape} and predicted {p.shape} activations are misaligned")
    if len(t) < 2 or np.ptp(t) == 0:
        return math.nan, False
    if np.ptp(p) == 0:
        return 0.0, True
    return float(np.corrcoef(t, p)[0, 1]), False


def _pooled(fragments: Sequence[Fragment], predictions: Sequence[Sequence[float]]
            ) -> tuple[float, bool]:
    if not fragments:
        return math.nan, False
    true, pred = [], []
    for frag, p in zip(fragments, predictions, strict=True):
        if len(p) != len(frag.activations):
            raise ValueError(f"{len(p)} predictions for a fragment of {len(frag.activations)} tokens")
        true.extend(frag.activations)
        pred.extend(p)
    return correlation(true, pred)


def score_simulation(fragments: Sequence[Fragment], simulation: Simulation,
                     n_top: int | None = None) -> Score:
    """Pooled correlation over all `fragments`; when `n_top` is given, the first n_top
    are the top fragments and the rest random, scored apart too (else those are NaN)."""
    preds = simulation.predictions
    if len(preds) != len(fragments):
        raise ValueError(f"{len(preds)} simulated fragments for {len(fragments)} fragments")
    r_all, const_all = _pooled(fragments, preds)
    if n_top is None:
        return Score(r_all, math.nan, math.nan, const_all)
    r_top, const_top = _pooled(fragments[:n_top], preds[:n_top])
    r_rnd, const_rnd = _pooled(fragments[n_top:], preds[n_top:])
    return Score(r_all, r_top, r_rnd, const_all or const_top or const_rnd)


def import_bootstrap() -> None:
    """Import what mean_ci needs (scipy.stats: ~0.5 s), e.g. while other processes
    finish their features, so that the summary does not wait for it."""
    from scipy import stats  # noqa: F401


def mean_ci(values: Sequence[float], seed: int = 0, confidence: float = 0.95,
            n_resamples: int = N_RESAMPLES) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean with its bootstrap CI (scipy's BCa), seeded. With fewer
    than two values, or identical ones, there is no spread to resample: lo and hi are
    NaN, or equal to the mean."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) == 1:
        return mean, math.nan, math.nan
    if np.ptp(x) <= 1e-12 * max(1.0, abs(mean)):  # identical up to rounding: BCa is undefined
        return mean, mean, mean
    from scipy import stats  # here: its import takes ~0.5 s that workers never need

    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          rng=np.random.default_rng(seed), vectorized=True)
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def balanced_accuracy(labels: Sequence[int], answers: Sequence[int]) -> float:
    """Mean of the recall of each class: chance is 0.5 whatever the class balance (raw
    accuracy's chance floor is the majority share, 0.714 in SAEBench's setting)."""
    from sklearn.metrics import balanced_accuracy_score

    if len(set(labels)) < 2:
        raise ValueError("balanced accuracy needs both classes among the labels")
    return float(balanced_accuracy_score(labels, answers))


def auroc(labels: Sequence[int], p1: Sequence[float]) -> float:
    """Area under the ROC curve of P(1) against the truth (ties count half: a constant
    P(1) scores exactly 0.5)."""
    from sklearn.metrics import roc_auc_score

    if len(set(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, p1))
