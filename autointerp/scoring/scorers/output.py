"""Output score: does steering the feature make the model say what its decoder promotes?

Judge-free, after Arad, Mueller and Belinkov (EMNLP 2025, "SAEs are good for steering, if
you select the right features"). T is the top-20 tokens of the feature's decoder direction
through the final norm's scale and the unembedding. At the KL-matched strength
(causal/steering.py; they steer at a fixed x10), on each held-out prompt,

    output score = (1 - min_{t in T} rank_steered(t) / |V|) * max_{t in T} p_steered(t)

(ranks from 0), averaged over the prompts. Beside it their input score: the share of the
feature's top activating fragments whose most active token is in T. The explanation is
not used: the null is random directions of the same norm (selftest_outputs.py).
"""

from __future__ import annotations

import time

import torch

from autointerp.scoring.scorers.base import ScoreRecord
from autointerp.scoring.steered import SteeringContext, SteerSettings, timed_costs
from autointerp.types import ScoringFailed


def output_score(logp: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """Per prompt (P,): logp (P, vocab) steered next-token log-probs, tokens T."""
    T = torch.as_tensor(tokens)
    rank = (logp[:, None, :] > logp[:, T, None]).sum(-1)  # (P, |T|) tokens ranked above each
    best_rank = rank.min(-1).values.float()
    return (1 - best_rank / logp.shape[-1]) * logp[:, T].exp().max(-1).values


def input_score(ff, promoted: list[str]) -> float:
    """Share of the top fragments whose most active token is one of T."""
    tops = [f for f in ff.top if f.activations and max(f.activations) > 0]
    if not tops:
        return float("nan")
    wanted = set(promoted)
    hits = [f.tokens[max(range(len(f.tokens)), key=f.activations.__getitem__)] in wanted
            for f in tops]
    return sum(hits) / len(hits)


def steer_feature(ctx: SteeringContext, direction, ff, n_shown: int) -> dict:
    """What both output-side scorers need of one feature: its prompt set (without the
    explainer's fragments), KL-matched strength, promoted and suppressed tokens."""
    exclude = set() if ff is None else {f.index for f in ff.explainer_fragments(n_shown)}
    steerer = ctx.steerer(exclude)
    calibration, cached = ctx.calibration(direction, steerer)
    if not calibration.reached:
        raise ScoringFailed(f"no strength reached KL {calibration.target} within "
                            f"{ctx.s.tolerance} (closest {calibration.kl:.3f} at "
                            f"s={calibration.strength:.3g} after {len(calibration.steps)} steps)")
    up, down = ctx.promoted(direction)
    return {"steerer": steerer, "calibration": calibration, "cached": cached,
            "promoted": up, "suppressed": down}


class OutputScorer:
    name = "output"

    def __init__(self, settings: SteerSettings = SteerSettings()):
        self.s = settings
        self.ctx: SteeringContext | None = None

    def settings(self) -> dict:
        from dataclasses import asdict

        return {"scorer": self.name, **asdict(self.s), "version": 1}

    def bind(self, ctx: SteeringContext) -> None:
        """The run's model, dictionary and prompts (the pipeline binds them before scoring)."""
        self.ctx = ctx

    async def prepare(self) -> None:
        return None

    async def score(self, explanation: str, ff, n_shown: int) -> ScoreRecord:
        if self.ctx is None:
            raise ScoringFailed("the output scorer was not given the run's model")
        return score_direction(self.ctx, self.ctx.direction(ff.feature), ff, n_shown)

    async def finish(self, db, run_id: str) -> None:
        """The random-direction row: each feature's direction replaced by a random one."""
        if self.ctx is not None and self.s.random_rows:
            ctx = self.ctx
            add_random_rows(ctx, db, run_id, lambda d, _: score_direction(ctx, d, None, 0).score)


def random_rows_todo(ctx: SteeringContext, db, run_id: str) -> list[tuple]:
    """(feature, explanation, random direction of the same norm seeded by the feature,
    metrics) for each scored feature of the run without its random-direction row yet."""
    from autointerp import db as dbm
    from autointerp.causal.steering import random_direction

    rows = db.query("select feature, explanation, metrics from features where run_id = ? "
                    "and status = 'scored' order by feature", [run_id])
    out = []
    for r in rows:
        metrics = dbm.loads(r["metrics"]) if r["metrics"] else {}
        if "random_direction" not in metrics:
            d = random_direction(ctx.direction(r["feature"]), ctx.s.seed + 7919 * (r["feature"] + 1))
            out.append((r["feature"], r["explanation"], d, metrics))
    return out


def write_random_row(db, run_id: str, feature: int, metrics: dict, value: float | None) -> None:
    """Into the feature's `metrics`: its random direction's score (None where no strength
    reached the target KL)."""
    from autointerp import db as dbm

    db["features"].update((run_id, feature), {"metrics": dbm.dumps({**metrics,
                                                                     "random_direction": value})})


def add_random_rows(ctx: SteeringContext, db, run_id: str, score_fn) -> None:
    """The random-direction row: score_fn(direction, explanation) of each feature's."""
    for feature, text, d, metrics in random_rows_todo(ctx, db, run_id):
        try:
            value = score_fn(d, text)
        except ScoringFailed:
            value = None
        write_random_row(db, run_id, feature, metrics, value)


def score_direction(ctx: SteeringContext, direction, ff, n_shown: int) -> ScoreRecord:
    started = time.perf_counter()
    steered = steer_feature(ctx, direction, ff, n_shown)
    steerer, cal = steered["steerer"], steered["calibration"]
    before = steerer.costs()
    per_prompt = output_score(steerer.last_logp(direction, cal.strength), steered["promoted"])
    promoted = ctx.decode(steered["promoted"])
    details = {"input_score": input_score(ff, promoted) if ff is not None else float("nan"),
               "strength": cal.strength, "kl": cal.kl, "kl_steps": [list(p) for p in cal.steps],
               "promoted": promoted, "suppressed": ctx.decode(steered["suppressed"]),
               "prompt_fragments": list(steerer.fragments),
               "per_prompt": [round(float(x), 6) for x in per_prompt],
               "costs": {**timed_costs(steerer, before, started),
                         "calibration_steps": 0 if steered["cached"] else len(cal.steps)}}
    details["costs"]["forward_passes"] += details["costs"]["calibration_steps"]
    return ScoreRecord(float(per_prompt.mean()), details=details)
