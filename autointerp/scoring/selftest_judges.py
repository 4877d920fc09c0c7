"""The self-test of detection and fuzzing: can this model's verdicts tell a right
explanation from a wrong one on planted features?

Each planted feature (planted.py) gets windows of real eval text where it fires and as
many where it does not (`example_len` tokens, the size detection and fuzzing show), as
held-out and checked-negative fragments. Its detection (or fuzzing) examples are judged
once with its true explanation and once with another planted feature's. The score is
balanced accuracy, so the thresholds differ from simulation's correlation ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from autointerp.scoring.fragments import FeatureFragments
from autointerp.scoring.planted import PLANTED, PlantedFeature, PlantedOutcome, derangement
from autointerp.types import Fragment, ScoringFailed

RIGHT_THRESHOLD = 0.75
"""Mean balanced accuracy with the true explanations must reach this (chance is 0.5)."""
GAP_THRESHOLD = 0.2
N_EACH = 10
"""Windows where the planted feature fires, and as many where it does not."""
JUDGE_SELFTEST_VERSION = 1


def judge_cases(fragments: list[tuple[int, tuple[str, ...]]], n_features: int, seed: int,
                example_len: int) -> list[tuple[PlantedFeature, FeatureFragments]]:
    """Planted features with N_EACH firing and N_EACH zero windows, in PLANTED order;
    features with too few of either are skipped."""
    windows = [(len(fragments) * k + i, toks[k * example_len:(k + 1) * example_len])
               for i, (_, toks) in enumerate(fragments)
               for k in range(len(toks) // example_len)]
    rng = np.random.default_rng(seed)
    out = []
    for j, feature in enumerate(PLANTED):
        if len(out) == n_features:
            break
        acts = [feature.activations(t) for _, t in windows]
        firing = [i for i, a in enumerate(acts) if any(a)]
        zero = [i for i, a in enumerate(acts) if not any(a)]
        if len(firing) < N_EACH or len(zero) < N_EACH:
            continue
        pos, neg = (_frags(windows, acts, rng.choice(ids, size=N_EACH, replace=False))
                    for ids in (firing, zero))
        out.append((feature, FeatureFragments(j, len(firing), (), (), pos, neg)))
    return out


def _frags(windows, acts, ids) -> tuple[Fragment, ...]:
    return tuple(Fragment(windows[i][1], acts[i], windows[i][0]) for i in sorted(ids))


async def judge_outcomes(scorer, fragments, settings, on_total: Callable[[int], None],
                         tick: Callable[[], None]):
    """PlantedOutcome per planted feature: balanced accuracy with its true and a wrong
    explanation (another planted feature's)."""

    scorer = replace_settings(scorer)
    cases = judge_cases(fragments, settings.n_features, settings.seed, scorer.s.example_len)
    if len(cases) < 2:
        from autointerp.errors import BadInputError
        raise BadInputError(f"only {len(cases)} planted feature(s) have {N_EACH} windows where "
                            "they fire and where they do not; the self-test needs more eval text")
    on_total(2 * len(cases))
    wrong_of = derangement(len(cases), settings.seed)

    async def one(explanation: str, ff) -> tuple[float | None, str | None]:
        try:
            return (await scorer.score(explanation, ff, 0)).score, None
        except ScoringFailed as e:
            return None, str(e) or "scoring failed"
        finally:
            tick()

    jobs = []
    for i, (feature, ff) in enumerate(cases):
        jobs += [one(feature.explanation, ff), one(cases[wrong_of[i]][0].explanation, ff)]
    results = await asyncio.gather(*jobs)
    outcomes = []
    for i, (feature, _) in enumerate(cases):
        (right, e1), (wrong, e2) = results[2 * i], results[2 * i + 1]
        failure = "; ".join(f"{w}: {e}" for w, e in (("right", e1), ("wrong", e2)) if e)
        outcomes.append(PlantedOutcome(feature.name, feature.explanation,
                                       cases[wrong_of[i]][0].explanation, right, wrong,
                                       failure or None))
    return tuple(outcomes)


def replace_settings(scorer):
    """The scorer with a class minimum that N_EACH windows can meet (fuzzing splits the
    firing windows between right and wrong marks)."""
    return type(scorer)(scorer.judge, replace(scorer.s, min_per_class=2))
