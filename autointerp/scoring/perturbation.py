"""Perturbation checks: does a scorer's score drop when the explanation is wrong by a part?

NeuronEval (2025) found that several common metrics do not move when an explanation
covers only part of a feature (a missing label) or names one concept too many (an extra
label). Here every scorer (simulation, detection, fuzzing, lexical or LLM) scores
planted features with the right explanation, a missing-label one and an extra-label
one; the mean drop from the right explanation to each perturbation must be above 0
beyond its 95% bootstrap CI, else the scorer is flagged: its scores would not tell a
partial or padded explanation from the right one.

The planted features are word sets whose explanations quote their words, so the
lexical scorer (which reads quoted tokens) is checked by the same cases as an LLM.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from autointerp.scoring.fragments import FeatureFragments
from autointerp.scoring.planted import PlantedFeature
from autointerp.scoring.stats import mean_ci
from autointerp.types import Fragment, ScoringFailed

PERTURBATION_VERSION = 1
N_EACH = 10
"""Windows (or fragments) where the feature fires, and as many where it does not."""
EXTRA = "and also the tokens 'the', 'a', ',' and '.'"
"""The unrelated concept an extra-label explanation adds: frequent, so it costs precision."""


def _words(*words: str):
    wanted = {w.lower() for w in words}
    return lambda tok: tok.strip().lower() in wanted


def _quoted(words) -> str:
    return ", ".join(f"'{w}'" for w in words)


@dataclass(frozen=True)
class Case:
    """A planted word-set feature and its two perturbed explanations."""

    name: str
    words: tuple[str, ...]
    part: tuple[str, ...]
    """The words a missing-label explanation keeps."""

    def feature(self) -> PlantedFeature:
        return PlantedFeature(self.name, f"the words {_quoted(self.words)}", "class",
                              _words(*self.words))

    def missing(self) -> PlantedFeature:
        return PlantedFeature(self.name + "-missing", f"the words {_quoted(self.part)}", "class",
                              _words(*self.part))

    def extra(self) -> PlantedFeature:
        return PlantedFeature(self.name + "-extra", f"the words {_quoted(self.words)}, {EXTRA}",
                              "class", _words(*self.words, "the", "a", ",", "."))


CASES = (
    Case("and-or", ("and", "or", "but"), ("and",)),
    Case("pronouns", ("he", "she", "they", "him", "her", "them", "his"), ("he", "him")),
    Case("in-on", ("in", "on", "at", "to"), ("in",)),
    Case("of-for", ("of", "for", "with", "from"), ("of",)),
    Case("it-this", ("it", "this", "that", "is", "was"), ("it", "is")),
)


@dataclass(frozen=True)
class PerturbationResult:
    scorer: str
    right: tuple[float, float, float]
    missing_drop: tuple[float, float, float]
    """Mean (right - missing-label score) over cases, with its 95% CI."""
    extra_drop: tuple[float, float, float]
    n_cases: int
    note: str = ""
    """Why the check could not run (then it is neither passed nor flagged)."""

    @property
    def ran(self) -> bool:
        return self.n_cases >= 2

    @property
    def flagged(self) -> bool:
        """The score did not drop beyond its CI for a missing or an extra label."""
        return self.ran and not (self.missing_drop[1] > 0 and self.extra_drop[1] > 0)

    def line(self) -> str:
        if not self.ran:
            return f"perturbation check [{self.scorer}]: could not run: {self.note}"
        def ci(v):
            return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"
        verdict = "FLAGGED" if self.flagged else "passed"
        return (f"perturbation check [{self.scorer}]: {verdict}: drop to a missing label "
                f"{ci(self.missing_drop)}, to an extra label {ci(self.extra_drop)} "
                f"({self.n_cases} planted word sets; right explanation {ci(self.right)})")


def _windows(fragments, length: int):
    return [(len(fragments) * k + i, toks[k * length:(k + 1) * length])
            for i, (_, toks) in enumerate(fragments) for k in range(len(toks) // length)]


def _ff(case: Case, fragments, length: int, j: int, rng) -> FeatureFragments | None:
    """The case's fragments: top and random 64-token fragments (simulation) and firing and
    zero windows of `length` tokens (detection, fuzzing)."""
    feat = case.feature()
    whole = [(i, toks, feat.activations(toks)) for i, (_, toks) in enumerate(fragments)]
    win = [(i, toks, feat.activations(toks)) for i, toks in _windows(fragments, length)]

    def split(items):
        firing = [x for x in items if any(x[2])]
        zero = [x for x in items if not any(x[2])]
        if len(firing) < N_EACH or len(zero) < N_EACH:
            return None
        def pick(xs):
            return ([xs[int(k)] for k in sorted(rng.choice(len(xs), N_EACH, replace=False))])
        return [tuple(Fragment(t, a, i) for i, t, a in part) for part in (pick(firing), pick(zero))]

    w, f = split(win), split(whole)
    if w is None or f is None:
        return None
    top = tuple(x for frag in f[0][:5] for x in (frag, frag))  # scoring_fragments takes top[1::2]
    return FeatureFragments(j, N_EACH, top, f[1][:5], w[0], w[1])


async def _score(scorer, explanation: str, ff) -> float | None:
    try:
        return (await scorer.score(explanation, ff, 5)).score
    except ScoringFailed:
        return None


async def perturbation_check(scorer, fragments: list[tuple[int, tuple[str, ...]]],
                             example_len: int = 21, seed: int = 0) -> PerturbationResult:
    """Score every case three ways; drops are paired per case."""
    rng = np.random.default_rng(seed)
    built = [(c, _ff(c, fragments, example_len, j, rng)) for j, c in enumerate(CASES)]
    built = [(c, ff) for c, ff in built if ff is not None]
    jobs = [_score(scorer, f.explanation, ff) for c, ff in built
            for f in (c.feature(), c.missing(), c.extra())]
    got = await asyncio.gather(*jobs)
    triples = [got[3 * k:3 * k + 3] for k in range(len(built))]
    triples = [t for t in triples if None not in t and not any(np.isnan(t))]
    nan3 = (float("nan"),) * 3
    if len(triples) < 2:
        return PerturbationResult(scorer.name, nan3, nan3, nan3, len(triples),
                                  f"only {len(triples)} planted word-set cases could be scored")
    right = mean_ci([t[0] for t in triples], seed)
    missing = mean_ci([t[0] - t[1] for t in triples], seed)
    extra = mean_ci([t[0] - t[2] for t in triples], seed)
    return PerturbationResult(scorer.name, right, missing, extra, len(triples))


def _sql(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


async def checked(scorer, simulator, db, store=None, tokenizer=None, seed: int = 0
                  ) -> PerturbationResult:
    """Run (or read back) the scorer's perturbation check, kept in the `perturbations` table
    with the simulator's identity, so compare can flag every run scored that way."""
    import hashlib
    import json

    from autointerp import db as dbm
    from autointerp.scoring.selftest import _fragments, fragment_source, simulator_identity

    length = getattr(getattr(scorer, "s", None), "example_len", 21)
    key = {"scorer": scorer.settings(), "scorer_name": scorer.name,
           "simulator": simulator_identity(simulator), "seed": seed,
           "source": fragment_source(store, tokenizer), "version": PERTURBATION_VERSION}
    pid = hashlib.sha256(dbm.dumps(key).encode()).hexdigest()
    if "perturbations" in db.table_names():
        for row in db.query("select * from perturbations where id = ?", [pid]):
            return PerturbationResult(row["scorer"], *(tuple(
                float("nan") if x is None else x for x in json.loads(row[k])) for k in
                ("right", "missing_drop", "extra_drop")),
                                      row["n_cases"], row["note"] or "")
    res = await perturbation_check(scorer, _fragments(store, tokenizer, 1000), length, seed)
    db["perturbations"].upsert({
        "id": pid, "scorer": res.scorer, "simulator": simulator.name,
        "simulator_mode": simulator.mode, "flagged": int(res.flagged), "ran": int(res.ran),
        **{k: json.dumps([_sql(x) for x in getattr(res, k)]) for k in
           ("right", "missing_drop", "extra_drop")},
        "n_cases": res.n_cases, "note": res.note, "created_at": dbm.now()}, pk="id")
    return res
