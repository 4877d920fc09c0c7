"""The simulator self-test: can this simulator score explanations at all?

Each planted feature (planted.py) is simulated twice: with its true explanation and
with the explanation of another planted feature. A simulator worth trusting scores
the right explanation high and the wrong one much lower. A weak one (SmolLM2-135M,
say) scores both about the same, and then no score it gives means anything: the
explain-then-simulate method (Bills et al. 2023) measures the explanation only
through the simulator. The verdict is cached in the `selftests` table.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import sqlite_utils

from autointerp import db as dbm
from autointerp.errors import BadInputError
from autointerp.scoring.planted import (
    PLANTED_VERSION,
    PlantedCase,
    PlantedOutcome,
    derangement,
    plant,
    smollm2_tokenizer,
    store_fragments,
    text_fragments,
)
from autointerp.scoring.stats import mean_ci, score_simulation
from autointerp.types import Fragment, SimulationFailed, Simulator

Interval = tuple[float, float, float]
"""(mean, lo, hi): a mean with its 95% bootstrap confidence interval."""


@dataclass(frozen=True)
class SelftestSettings:
    n_features: int = 8
    """Planted features to simulate (each twice); at most the 12 defined in planted.py. Each
    costs two simulations, i.e. as much as scoring two features."""
    seed: int = 0
    right_threshold: float = 0.5
    """The mean score with the true explanation must reach this."""
    gap_threshold: float = 0.2
    """The mean paired gap (right minus wrong explanation) must reach this."""
    max_fragments: int = 1000
    """Eval fragments searched for planted features."""
    n_top: int = 5
    """Fragments per planted feature where it fires; 5 top + 5 random, as the scoring uses."""
    n_random: int = 5

    def __post_init__(self):
        if self.n_features < 2:
            raise ValueError("the self-test needs at least 2 planted features (one's wrong "
                             "explanation is another's true one)")
        if self.n_top < 1 or self.n_random < 0:
            raise ValueError("the self-test needs n_top >= 1 and n_random >= 0")


@dataclass(frozen=True)
class SelftestResult:
    id: str
    """sha256 of the simulator identity, mode, fragment source and settings."""
    simulator: str
    mode: str
    right: Interval
    wrong: Interval
    gap: Interval
    """Paired per feature: right minus wrong, over features where both simulations succeeded."""
    passed: bool
    right_threshold: float
    gap_threshold: float
    details: tuple[PlantedOutcome, ...]
    cached: bool = field(default=False, compare=False)
    """Read back from the database rather than simulated now."""
    scorer: str = "simulation"

    @property
    def n_failed(self) -> int:
        """Simulations that failed (each planted feature has two)."""
        return sum((d.right is None) + (d.wrong is None) for d in self.details)

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def shortfalls(self) -> list[str]:
        paired = sum(d.right is not None and d.wrong is not None for d in self.details)
        return shortfalls(self.right, self.gap, paired, len(self.details),
                          self.right_threshold, self.gap_threshold)


def simulator_identity(simulator: Simulator) -> dict:
    """Name, resolved mode and whatever else shapes its predictions (prompt version, scale),
    but not how the mode was chosen."""
    described = getattr(simulator, "settings", None)
    ident = dict(described()) if described else {}
    for how in ("note", "requested_mode"):
        ident.pop(how, None)
    return {**ident, "name": simulator.name, "mode": simulator.mode}


def selftest_id(simulator: Simulator, source: str, settings: SelftestSettings,
                scorer=None) -> str:
    """`scorer`: None for the simulation self-test (its ids are those from before other
    scorers existed), else the detection or fuzzing scorer, whose settings join the key."""
    key = {"simulator": simulator_identity(simulator), "source": source,
           "planted_version": PLANTED_VERSION, **asdict(settings)}
    if scorer is not None:
        from autointerp.scoring.selftest_judges import (
            GAP_THRESHOLD,
            JUDGE_SELFTEST_VERSION,
            N_EACH,
            RIGHT_THRESHOLD,
        )

        key.update(scorer=scorer.settings(), judge_version=JUDGE_SELFTEST_VERSION, n_each=N_EACH,
                   right_threshold=RIGHT_THRESHOLD, gap_threshold=GAP_THRESHOLD)
    return hashlib.sha256(dbm.dumps(key).encode()).hexdigest()


def fragment_source(store, tokenizer=None) -> str:
    """What the planted fragments are cut from, as part of the cache key."""
    if store is None:
        from autointerp.harvest.corpus import open_corpus

        tok = getattr(tokenizer, "name_or_path", None) or "smollm2"
        return f"builtin:{open_corpus('builtin').fingerprint}:{tok}"
    meta = hashlib.sha256(dbm.dumps(store.meta).encode()).hexdigest()
    return f"store:{meta}"


async def _score(simulator: Simulator, explanation: str, fragments: tuple[Fragment, ...],
                 tick: Callable[[], None]) -> tuple[float | None, str | None]:
    try:
        simulation = await simulator.simulate(explanation, list(fragments))
        return score_simulation(list(fragments), simulation).all, None
    except SimulationFailed as e:
        return None, str(e) or "simulation failed"
    except ValueError as e:  # predictions not aligned one-to-one with the tokens
        return None, f"misaligned: {e}"
    finally:
        tick()


async def simulate_cases(simulator: Simulator, cases: list[PlantedCase], seed: int,
                         tick: Callable[[], None] = lambda: None) -> tuple[PlantedOutcome, ...]:
    """Simulate every case with its true and with a deranged explanation, concurrently."""
    wrong_of = derangement(len(cases), seed)
    jobs = []
    for i, case in enumerate(cases):
        jobs.append(_score(simulator, case.feature.explanation, case.fragments, tick))
        jobs.append(_score(simulator, cases[wrong_of[i]].feature.explanation, case.fragments, tick))
    results = await asyncio.gather(*jobs)
    outcomes = []
    for i, case in enumerate(cases):
        (right, e1), (wrong, e2) = results[2 * i], results[2 * i + 1]
        failure = "; ".join(f"{which}: {e}" for which, e in (("right", e1), ("wrong", e2)) if e)
        outcomes.append(PlantedOutcome(case.feature.name, case.feature.explanation,
                                       cases[wrong_of[i]].feature.explanation,
                                       right, wrong, failure or None))
    return tuple(outcomes)


def shortfalls(right: Interval, gap: Interval, n_paired: int, n_features: int,
               right_threshold: float, gap_threshold: float) -> list[str]:
    """Why a simulator fails, one phrase per unmet condition (none: it passes). Besides the
    two thresholds, at least half the planted features (and two) must have been simulated
    both ways: a simulator that mostly fails to answer is failing."""
    out = []
    if n_paired < max(2, n_features / 2):
        out.append(f"only {n_paired} of {n_features} planted features were simulated both ways")
    if not right[0] >= right_threshold:  # NaN fails too
        out.append(f"mean score with the true explanation {right[0]:.3f} < {right_threshold}")
    if not gap[0] >= gap_threshold:
        out.append(f"mean gap between true and wrong explanations {gap[0]:.3f} < {gap_threshold}")
    return out


def summarise(outcomes: tuple[PlantedOutcome, ...], settings: SelftestSettings,
              thresholds: tuple[float, float] | None = None
              ) -> tuple[Interval, Interval, Interval, bool]:
    """Means with bootstrap CIs over planted features, and the verdict."""
    right = [o.right for o in outcomes if o.right is not None]
    wrong = [o.wrong for o in outcomes if o.wrong is not None]
    gaps = [o.right - o.wrong for o in outcomes if o.right is not None and o.wrong is not None]
    r, w, g = (mean_ci(v, seed=settings.seed) for v in (right, wrong, gaps))
    right_t, gap_t = thresholds or (settings.right_threshold, settings.gap_threshold)
    unmet = shortfalls(r, g, len(gaps), len(outcomes), right_t, gap_t)
    return r, w, g, not unmet


def _to_row(res: SelftestResult, settings: SelftestSettings) -> dict:
    row = {"id": res.id, "simulator": res.simulator, "simulator_mode": res.mode,
           "scorer": res.scorer,
           "passed": int(res.passed), "created_at": dbm.now(),
           "thresholds": dbm.dumps({"right": res.right_threshold, "gap": res.gap_threshold}),
           "details": dbm.dumps({"settings": asdict(settings),
                                 "features": [asdict(d) for d in res.details]})}
    for name, (mean, lo, hi) in (("right", res.right), ("wrong", res.wrong), ("gap", res.gap)):
        # SQLite has no NaN; NULL stands for "no value" and is read back as NaN.
        row.update({f"{name}_mean": _sql(mean), f"{name}_lo": _sql(lo), f"{name}_hi": _sql(hi)})
    return row


def _sql(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _from_row(row: dict) -> SelftestResult:
    def interval(name: str) -> Interval:
        return tuple(math.nan if row[f"{name}_{k}"] is None else row[f"{name}_{k}"]
                     for k in ("mean", "lo", "hi"))

    thresholds = json.loads(row["thresholds"])
    details = json.loads(row["details"])["features"]
    return SelftestResult(row["id"], row["simulator"], row["simulator_mode"], interval("right"),
                          interval("wrong"), interval("gap"), bool(row["passed"]),
                          thresholds["right"], thresholds["gap"],
                          tuple(PlantedOutcome(**d) for d in details), cached=True,
                          scorer=row.get("scorer") or "simulation")


def load_selftest(db: sqlite_utils.Database, id: str) -> SelftestResult | None:
    rows = list(db["selftests"].rows_where("id = ?", [id]))
    return _from_row(rows[0]) if rows else None


async def selftest(simulator: Simulator, db: sqlite_utils.Database, *, store=None,
                   settings: SelftestSettings = SelftestSettings(), tokenizer=None,
                   on_total: Callable[[int], None] = lambda n: None,
                   tick: Callable[[], None] = lambda: None, scorer=None) -> SelftestResult:
    """Run (or read back) the self-test of the simulation, or of `scorer` (a detection or
    fuzzing scorer, judging through the simulator's model). Fragments come from the store's
    eval split, else from the builtin corpus tokenized with `tokenizer` (default: SmolLM2's)."""
    scorer = None if scorer is None or scorer.name == "simulation" else scorer
    prepare = getattr(scorer or simulator, "prepare", None)
    if prepare is not None:  # resolves `--simulator-mode auto`, which the key must name
        await prepare()
    id = selftest_id(simulator, fragment_source(store, tokenizer), settings, scorer)
    if (done := load_selftest(db, id)) is not None:
        return done
    fragments = _fragments(store, tokenizer, settings.max_fragments)
    if scorer is None:
        outcomes, thresholds = await _simulation_outcomes(simulator, fragments, settings,
                                                          on_total, tick), None
    else:
        from autointerp.scoring.selftest_judges import (
            GAP_THRESHOLD,
            RIGHT_THRESHOLD,
            judge_outcomes,
        )

        outcomes = await judge_outcomes(scorer, fragments, settings, on_total, tick)
        thresholds = (RIGHT_THRESHOLD, GAP_THRESHOLD)
    right, wrong, gap, passed = summarise(outcomes, settings, thresholds)
    right_t, gap_t = thresholds or (settings.right_threshold, settings.gap_threshold)
    res = SelftestResult(id, simulator.name, simulator.mode, right, wrong, gap, passed,
                         right_t, gap_t, outcomes, scorer=scorer.name if scorer else "simulation")
    db["selftests"].upsert(_to_row(res, settings), pk="id")
    return res


async def _simulation_outcomes(simulator, fragments, settings, on_total, tick):
    cases = plant(fragments, settings.n_features, settings.seed, settings.n_top, settings.n_random)
    if len(cases) < 2:
        raise BadInputError(f"only {len(cases)} planted feature(s) fire in at least "
                            f"{settings.n_top} eval fragments; the self-test needs more eval text "
                            "(or skip it: score --no-selftest)")
    on_total(2 * len(cases))
    return await simulate_cases(simulator, cases, settings.seed, tick)


def run_selftest(simulator: Simulator, db: sqlite_utils.Database, *, store=None,
                 n_features: int = 8, seed: int = 0, right_threshold: float = 0.5,
                 gap_threshold: float = 0.2, tokenizer=None, n_top: int = 5, n_random: int = 5,
                 scorer=None, **callbacks) -> SelftestResult:
    """Synchronous entry point (the CLI's); `await selftest(...)` inside an event loop."""
    settings = SelftestSettings(n_features, seed, right_threshold, gap_threshold,
                                n_top=n_top, n_random=n_random)
    return asyncio.run(selftest(simulator, db, store=store, settings=settings,
                                tokenizer=tokenizer, scorer=scorer, **callbacks))


def _fragments(store, tokenizer, max_fragments: int) -> list[tuple[int, tuple[str, ...]]]:
    if store is not None:
        return store_fragments(store, max_fragments)
    from autointerp.harvest.corpus import open_corpus

    # The builtin corpus is shuffled so that any prefix mixes its genres (corpus_builtin.py).
    return text_fragments((d.text for d in open_corpus("builtin")),
                          tokenizer or smollm2_tokenizer(), max_fragments=max_fragments)
