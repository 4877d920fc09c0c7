"""Detection: given the explanation, does this text make the feature fire?

The judge (the simulator's model) sees batches of held-out examples: windows of
fragments where the feature fires, drawn across its activation quantiles and never
shown to the explainer, and as many windows of fragments checked to be zero at every
token (fragments.py). It answers 1 or 0 per example. Unlike SAEBench, a negative is
never an unchecked random window, and the score is balanced accuracy (chance 0.5)
with AUROC of P(1) where logprobs exist (verdicts.py).
"""

from __future__ import annotations

from dataclasses import asdict

from autointerp.scoring.verdicts import (
    Example,
    JudgeSettings,
    activating_examples,
    check_counts,
    judge_examples,
    negative_examples,
)


def detection_examples(ff, s: JudgeSettings) -> list[Example]:
    """The feature's held-out activating examples (label 1) and as many checked negatives."""
    positives = activating_examples(ff, s)
    negatives = negative_examples(ff, s, len(positives))
    check_counts(len(positives), len(negatives), s, "detection")
    return positives + negatives


class DetectionScorer:
    name = "detection"

    def __init__(self, judge, settings: JudgeSettings = JudgeSettings()):
        self.judge, self.s = judge, settings

    def settings(self) -> dict:
        return {"scorer": self.name, "judge": self.judge.settings(), **asdict(self.s)}

    async def prepare(self) -> None:
        await self.judge.prepare()

    async def score(self, explanation: str, ff, n_shown: int):
        examples = detection_examples(ff, self.s)
        return await judge_examples(self.judge, explanation, examples, self.s, ff.feature)
