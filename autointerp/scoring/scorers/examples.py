"""The examples detection and fuzzing ask about, under the feature's negative rule
(contrast.py): the zero rule's wherever it applies, else the threshold rule's."""

from __future__ import annotations

import numpy as np

from autointerp.scoring.contrast import (
    Contrast,
    threshold_windows,
    zero_contrast,
    zero_rule_applies,
)
from autointerp.scoring.verdicts import (
    Example,
    JudgeSettings,
    activating_examples,
    negative_examples,
    quantile_bins,
    window,
)


def contrasted_examples(ff, s: JudgeSettings) -> tuple[list[Example], list[Example], Contrast]:
    """(positives, negatives, rule): the zero rule's examples wherever it applies, else the
    threshold rule's (contrast.py), as many negatives as positives under it."""
    if zero_rule_applies(ff, s.min_per_class):
        positives = activating_examples(ff, s)
        return positives, negative_examples(ff, s, len(positives)), zero_contrast(ff)
    pos, neg, c = threshold_windows(ff, s.example_len)
    n = min(len(pos), len(neg), max(s.min_per_class, len(ff.held_out)))
    # positives spread evenly over the strength ranks, so every quantile bin is asked about
    picked = [pos[int(i)] for i in np.unique(np.linspace(0, len(pos) - 1, n).round())] if n else []
    rng = np.random.default_rng([s.seed, ff.feature, 3])
    negs = [neg[int(i)] for i in sorted(rng.permutation(len(neg))[:n])]
    bins = quantile_bins([max(f.activations[a:a + s.example_len]) for f, a in picked],
                         s.n_quantiles) if picked else []
    positives = [Example(*window(f, s.example_len, a), 1, q, f.index)
                 for (f, a), q in zip(picked, bins, strict=True)]
    negatives = [Example(*window(f, s.example_len, a), 0, -1, f.index) for f, a in negs]
    return positives, negatives, c
