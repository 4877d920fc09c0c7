"""How stable a ranking of methods is ("Building Fast, Evaluating Slow", 2026: the random
draw moves scores more than the architecture does, and rankings flip between draws).

For methods compared like for like (same hook point, scorer, explainer, simulator and
negative rule), each bootstrap resample draws every method's features with replacement
(different dictionaries' features are unrelated, so independently) and, where a feature
has several explanation samples, its samples with replacement too. Per pair of methods:
the share of resamples in which their observed order holds; an order holding in under
95% of them is marked. For the whole ranking: Kendall tau between the observed ranking
and each resample's. Per method: the variance of its scores split into between-feature,
between-explanation-sample and between-example-draw parts (law of total variance over
equal-size groups, so the parts sum to the total).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.stats

N_STABILITY = 1000
"""Bootstrap resamples for the order shares (each resample recomputes every method's mean)."""
HOLDS = 0.95
"""An ordering is stable when it holds in at least this share of resamples."""


@dataclass(frozen=True)
class PairOrder:
    a: str
    b: str
    """Observed order: mean of a >= mean of b."""
    share: float
    """Share of resamples in which mean(a) > mean(b) (ties count half)."""

    @property
    def stable(self) -> bool:
        return self.share >= HOLDS


@dataclass(frozen=True)
class VarianceSplit:
    total: float
    feature: float
    explanation: float
    draw: float
    n_features: int
    n_explanations: int
    n_draws: int


def _cells(scores) -> np.ndarray:
    """A method's scores as (features, explanations, draws), NaN where missing."""
    rows = [np.atleast_1d(np.asarray(s, dtype=np.float64)) for s in scores]
    rows = [r if r.ndim > 1 else r[:, None] for r in rows]
    e = max(r.shape[0] for r in rows)
    d = max(r.shape[1] for r in rows)
    out = np.full((len(rows), e, d), np.nan)
    for i, r in enumerate(rows):
        out[i, :r.shape[0], :r.shape[1]] = r
    return out


def _resampled_means(cells: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) means of the method's scores over two-stage resamples: features, then the
    explanation samples (and draws) of each drawn feature."""
    f, e, d = cells.shape
    out = np.empty(n)
    for k in range(n):
        fi = rng.integers(0, f, f)
        x = cells[fi]
        if e > 1:
            x = np.take_along_axis(x, rng.integers(0, e, (f, e))[:, :, None].repeat(d, 2), 1)
        if d > 1:
            x = np.take_along_axis(x, rng.integers(0, d, (f, e, d)), 2)
        out[k] = np.nanmean(x)
    return out


def resampled_means(methods: dict[str, list], seed: int = 0, n: int = N_STABILITY
                    ) -> dict[str, np.ndarray]:
    """Per method, its mean in each of n resamples (one seeded generator per method)."""
    return {m: _resampled_means(_cells(s), np.random.default_rng([seed, i]), n)
            for i, (m, s) in enumerate(methods.items())}


def pair_orders(methods: dict[str, list], seed: int = 0, n: int = N_STABILITY) -> list[PairOrder]:
    """Every pair of methods in observed order, with the share of resamples it holds in."""
    observed = {m: float(np.nanmean(_cells(s))) for m, s in methods.items()}
    means = resampled_means(methods, seed, n)
    out = []
    for a, b in itertools.combinations(methods, 2):
        if observed[b] > observed[a]:
            a, b = b, a
        diff = means[a] - means[b]
        out.append(PairOrder(a, b, float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))))
    return out


def ranking_tau(methods: dict[str, list], seed: int = 0, n: int = N_STABILITY
                ) -> tuple[float, float]:
    """(mean, 5% quantile) of Kendall tau between the observed ranking and each resample's."""
    names = list(methods)
    if len(names) < 3:
        return float("nan"), float("nan")
    observed = [float(np.nanmean(_cells(methods[m]))) for m in names]
    means = resampled_means(methods, seed, n)
    taus = [scipy.stats.kendalltau(observed, [means[m][k] for m in names]).statistic
            for k in range(n)]
    return float(np.mean(taus)), float(np.quantile(taus, 0.05))


def variance_split(scores) -> VarianceSplit:
    """Variance of the scores (population) = between features + between explanation samples
    within a feature + between example draws within a sample. Exact for complete, equal
    groups; features missing a cell are left out so that the identity holds."""
    cells = _cells(scores)
    cells = cells[~np.isnan(cells).any(axis=(1, 2))]
    if not len(cells):
        return VarianceSplit(*(float("nan"),) * 4, 0, 0, 0)
    f, e, d = cells.shape
    sample_means = cells.mean(2)  # (f, e)
    feature_means = sample_means.mean(1)  # (f,)
    draw = float(cells.var(2).mean())
    explanation = float(sample_means.var(1).mean())
    feature = float(feature_means.var())
    return VarianceSplit(float(cells.var()), feature, explanation, draw, f, e, d)
