"""Which held-out windows are positives and which are negatives (detection, fuzzing).

Two rules, and every scored feature records which one it used:

- `zero` (the rule since detection began): positives are windows around the maximum of
  held-out fragments where the feature fires; negatives are windows of fragments checked
  to be zero at every token. It applies whenever a feature has `min_per_class` such
  fragments.
- `threshold`, for dense features (PCA, ICA, neuron and random directions fire almost
  everywhere, so they have no all-zero fragment): the held-out fragments are cut into
  non-overlapping windows; a window whose maximum is at most the `low` quantile of all
  window maxima is a negative, one whose maximum is at least the `high` quantile is a
  positive. Both thresholds are recorded as activations and as fractions of the
  feature's top activation, so a reader can see how sharp the contrast is.

A feature that still cannot be contrasted (too few windows, or window maxima that do
not separate) is refused with its reason: a refusal beats a wrong number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autointerp.types import ScoringFailed

RULES = ("zero", "threshold")
DENSE_LOW = 0.2
"""Quantile of the window maxima at or below which a window is a negative (threshold rule)."""
DENSE_HIGH = 0.8
"""Quantile of the window maxima at or above which a window is a positive (threshold rule)."""


@dataclass(frozen=True)
class Contrast:
    """The rule a feature's examples were labelled by."""

    rule: str
    """zero | threshold."""
    low: float = 0.0
    """A negative window's maximum is at most this activation (0 for the zero rule)."""
    high: float = 0.0
    """A positive window's maximum is at least this (above 0 for the zero rule)."""
    top: float = 0.0
    """The feature's largest activation among its top fragments."""

    def fires(self, a: float) -> bool:
        """A token a fuzzing example marks as where the feature fires."""
        return a > 0 if self.rule == "zero" else a >= self.high

    def quiet(self, a: float) -> bool:
        """A token a mismarked fuzzing example may mark."""
        return a <= self.low

    def details(self) -> dict:
        """JSON-able: what the run records per feature (fractions of the top activation)."""
        frac = (lambda x: round(x / self.top, 4)) if self.top > 0 else (lambda x: None)
        return {"rule": self.rule, "low": self.low, "high": self.high,
                "low_fraction": frac(self.low), "high_fraction": frac(self.high)}


def top_activation(ff) -> float:
    return max((max(f.activations) for f in ff.top), default=0.0)


def windows(fragment, length: int) -> list[tuple[int, int]]:
    """(start, end) of the non-overlapping windows of `length` tokens that fit the fragment."""
    return [(s, s + length) for s in range(0, len(fragment.tokens) - length + 1, length)]


def threshold_windows(ff, length: int, low_q: float = DENSE_LOW, high_q: float = DENSE_HIGH):
    """(positives, negatives, contrast): windows as (fragment, start) pairs, positives
    strongest first, from every held-out and checked-zero fragment of the feature."""
    cands = [(f, s, max(f.activations[s:e])) for f in (*ff.held_out, *ff.negatives)
             for s, e in windows(f, length)]
    if not cands:
        raise ScoringFailed("no held-out window to contrast (threshold rule)")
    maxima = np.asarray([m for _, _, m in cands], dtype=np.float64)
    low, high = (float(np.quantile(maxima, q)) for q in (low_q, high_q))
    if not high > low:
        raise ScoringFailed(f"window maxima do not separate: the {low_q:.0%} and {high_q:.0%} "
                            f"quantiles are both {low:.4g} (threshold rule)")
    pos = sorted(((f, s) for f, s, m in cands if m >= high), key=lambda c: -max(
        c[0].activations[c[1]:c[1] + length]))
    neg = [(f, s) for f, s, m in cands if m <= low]
    return pos, neg, Contrast("threshold", low, high, top_activation(ff))


def zero_rule_applies(ff, min_per_class: int) -> bool:
    """Today's rule wherever the feature has enough checked all-zero fragments."""
    return len(ff.negatives) >= min_per_class


def zero_contrast(ff) -> Contrast:
    firing = [a for f in ff.held_out for a in f.activations if a > 0]
    return Contrast("zero", 0.0, min(firing, default=0.0), top_activation(ff))


def choose(ff, min_per_class: int, length: int) -> Contrast:
    """The feature's rule and thresholds for windows of `length` tokens."""
    if zero_rule_applies(ff, min_per_class):
        return zero_contrast(ff)
    return threshold_windows(ff, length)[2]
