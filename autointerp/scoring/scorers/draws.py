"""Example draws (`score --resample-examples N`): each explanation is scored on N seeded
draws of its held-out examples, so that `compare` can tell how much of a method's
variance is the luck of the examples ("Building Fast, Evaluating Slow", 2026: the random
draw moves scores more than the architecture does).

Draw 0 is exactly the single draw of a run without the option, so N = 1 changes no score
and no run id. Draw k >= 1 is a stratified bootstrap: each pool of examples the scorer
draws from (simulation: its top and its random scoring fragments; detection and fuzzing:
the held-out activating and the checked zero fragments) resampled with replacement at
its own size, and every seeded choice downstream (windows, marks, batches) reseeded.
Why with replacement rather than disjoint subsets of a larger pool: the spare top
fragments are weaker ranks, not exchangeable with the scored ones, so a disjoint draw
would shift the score systematically rather than show its noise; and the held-out pools
are used whole already. Each draw then has draw 0's size and strength mix, and the
spread between draws is the bootstrap's estimate of the examples' sampling noise, the
same resampling `compare` applies to features.

The headline score is the mean over draws; the per-draw scores are kept in the record's
details (`draw_scores`), which scoring/feature.py stores where compare's variance split
reads them. The report's examples and counts are draw 0's.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import numpy as np

from autointerp.errors import BadInputError
from autointerp.scoring.scorers.base import OUTPUT_SCORERS, ScoreRecord

DRAW_STREAM = 11
"""Seed stream of the bootstrap draws, apart from every other seeded choice."""


def check_draws(n: int, scorers=()) -> int:
    """N as asked, refused (one line) below 1, or above 1 for a scorer it does not apply to."""
    if n < 1:
        raise BadInputError(f"--resample-examples must be at least 1 (got {n})")
    others = [s for s in scorers if s in OUTPUT_SCORERS]
    if n > 1 and others:
        raise BadInputError(f"--resample-examples applies to simulation, detection and "
                            f"fuzzing, not to {others[0]} (it draws no held-out examples)")
    return n


def draw_settings(n: int) -> dict:
    """What the draws add to a scorer's settings (its run id): nothing for one draw."""
    return {} if n == 1 else {"resample_examples": n}


def resample(items, rng: np.random.Generator) -> tuple:
    """`items` drawn with replacement at their own size."""
    items = tuple(items)
    return tuple(items[int(i)] for i in rng.integers(0, len(items), len(items))) if items else ()


def draw_rng(seed: int, feature: int, draw: int) -> np.random.Generator:
    return np.random.default_rng([seed, feature, draw, DRAW_STREAM])


def judge_draw(ff, s, draw: int):
    """(fragments, settings) of detection's and fuzzing's draw `draw`: draw 0 unchanged."""
    if draw == 0:
        return ff, s
    rng = draw_rng(s.seed, ff.feature, draw)
    drawn = replace(ff, held_out=resample(ff.held_out, rng), negatives=resample(ff.negatives, rng))
    return drawn, replace(s, seed=int(rng.integers(0, 2**31)))


def simulation_draw(top: list, rest: list, feature: int, draw: int) -> tuple[list, list]:
    """The top and random scoring fragments of simulation's draw `draw`, each resampled
    within its own stratum (draw 0 unchanged)."""
    if draw == 0:
        return top, rest
    rng = draw_rng(0, feature, draw)
    return list(resample(top, rng)), list(resample(rest, rng))


def _mean(xs) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return float(np.mean(xs)) if xs else float("nan")


def combine(records: list[ScoreRecord]) -> ScoreRecord:
    """One explanation's record over its draws: the mean of each score, draw 0's details
    (examples, verdicts, counts) with every draw's score beside them."""
    if len(records) == 1:
        return records[0]
    first = records[0]
    details = {**first.details, "draw_scores": [None if math.isnan(r.score) else r.score
                                                for r in records]}
    return ScoreRecord(_mean([r.score for r in records]), _mean([r.score_top for r in records]),
                       _mean([r.score_random for r in records]),
                       _mean([r.auroc for r in records]),
                       any(r.constant for r in records), details)


async def score_draws(one, n: int) -> ScoreRecord:
    """`one(draw)` awaited for draws 0..n-1 (in parallel; any failure fails the score, as
    a partial score would hide which draws were lost), combined."""
    return combine(list(await asyncio.gather(*(one(k) for k in range(n)))))
