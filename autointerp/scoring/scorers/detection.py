"""Detection: given the explanation, does this text make the feature fire?

The judge (the simulator's model) sees batches of held-out examples: windows of
fragments where the feature fires, drawn across its activation quantiles and never
shown to the explainer, and as many windows of fragments checked to be zero at every
token (fragments.py); a dense feature, which has too few of those, is contrasted by its
window maxima instead (contrast.py), and each score records which rule it used. It answers 1 or 0 per example. Unlike SAEBench, a negative is
never an unchecked random window, and the score is balanced accuracy (chance 0.5)
with AUROC of P(1) where logprobs exist (verdicts.py).
"""

from __future__ import annotations

from autointerp.scoring.scorers.examples import contrasted_examples
from autointerp.scoring.verdicts import Example, JudgeScorer, JudgeSettings, check_counts


def detection_examples(ff, s: JudgeSettings) -> list[Example]:
    """The feature's held-out activating examples (label 1) and as many negatives: checked
    all-zero windows, or for a dense feature windows under its low threshold (contrast.py)."""
    positives, negatives, c = contrasted_examples(ff, s)
    check_counts(len(positives), len(negatives), s,
                 "detection" if c.rule == "zero" else "detection (threshold rule)")
    return positives + negatives


class DetectionScorer(JudgeScorer):
    name = "detection"

    def examples(self, ff, s: JudgeSettings) -> list[Example]:
        return detection_examples(ff, s)

    def contrast(self, ff, s: JudgeSettings):
        return contrasted_examples(ff, s)[2]
