"""Fuzzing: are the marked tokens the ones the explanation describes?

The held-out activating examples of detection, alternately (within each activation
quantile) marked where the feature fires (label 1) or on as many tokens where it does
not (label 0), and checked zero-activation examples with random marks (label 0). The
judge answers 1 or 0 per example; scored as detection is (verdicts.py). For a dense
feature (contrast.py's threshold rule) marks go on tokens at or above its high threshold,
mismarks on tokens at or below its low one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from autointerp.scoring.scorers.examples import contrasted_examples
from autointerp.scoring.verdicts import Example, JudgeScorer, JudgeSettings, check_counts


def fuzzing_examples(ff, s: JudgeSettings) -> list[Example]:
    rng = np.random.default_rng([s.seed, ff.feature, 2])
    out, n_marks = [], []
    positives, negatives, c = contrasted_examples(ff, s)
    ranked = sorted(positives, key=lambda e: (e.quantile, e.fragment))
    for k, ex in enumerate(ranked):
        firing = [i for i, a in enumerate(ex.activations) if c.fires(a)]
        quiet = [i for i, a in enumerate(ex.activations) if c.quiet(a)]
        if k % 2 == 0:
            out.append(replace(ex, marks=tuple(firing)))
            n_marks.append(len(firing))
        elif quiet:  # a window where every token fires cannot be mismarked
            marks = rng.choice(quiet, size=min(len(firing), len(quiet)), replace=False)
            out.append(replace(ex, label=0, marks=tuple(sorted(int(i) for i in marks))))
    n_pos = sum(e.label for e in out)
    for ex in negatives:
        n = int(rng.choice(n_marks)) if n_marks else 1
        marks = rng.choice(len(ex.tokens), size=min(max(1, n), len(ex.tokens)), replace=False)
        out.append(replace(ex, marks=tuple(sorted(int(i) for i in marks))))
    check_counts(n_pos, len(out) - n_pos, s,
                 "fuzzing" if c.rule == "zero" else "fuzzing (threshold rule)")
    return out


class FuzzingScorer(JudgeScorer):
    name = "fuzzing"

    def examples(self, ff, s: JudgeSettings) -> list[Example]:
        return fuzzing_examples(ff, s)

    def contrast(self, ff, s: JudgeSettings):
        return contrasted_examples(ff, s)[2]
