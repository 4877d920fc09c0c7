"""One feature, explained once and scored by every scorer asked for: its result rows.

Each scorer gets its own row (one per run; a run is one dictionary x scorer). Any
failure fails that scorer's row with its reason; nothing is scored partially. A failed
explanation fails every scorer's row. Tokens and calls are billed per row: the
explanation's (the same on every row of the feature) and the scorer's own.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np

from autointerp import db as dbm
from autointerp.llm.base import EndpointAuthError, LLMCallError
from autointerp.scoring.explain import ExplanationFailed
from autointerp.scoring.fragments import FeatureFragments
from autointerp.scoring.ledger import Ledger, tallied
from autointerp.scoring.safety import drop_unsafe
from autointerp.scoring.usage import Meter, measure
from autointerp.types import ScoringFailed

CALL_FAILED = "llm call failed"
"""Reason prefix of features lost to endpoint errors; a rerun tries them again."""
SUMMARY_KEYS = ("recall_per_quantile", "no_answer", "n_positive", "n_negative", "negative_rule",
                "input_score", "strength", "kl", "costs")
"""Small per-record figures kept in the `metrics` column beside the full details."""


def _frag(f) -> dict:
    return {"index": f.index, "tokens": list(f.tokens), "activations": list(f.activations)}


def histogram(ff: FeatureFragments, bins: int = 20) -> dict:
    """Non-zero token activations in the held-out fragments (a random sample of those where
    the feature fires), binned: what Neuronpedia's activation histogram shows."""
    acts = np.asarray([a for f in ff.held_out or ff.random for a in f.activations if a > 0])
    if not len(acts):
        return {}
    counts, edges = np.histogram(acts, bins=bins)
    return {"counts": counts.tolist(), "edges": [round(float(e), 4) for e in edges],
            "n_fragments": len(ff.held_out or ff.random), "n_nonzero": ff.n_nonzero}


def _nanmean(xs) -> float | None:
    """Mean ignoring NaN (a random-only score is undefined where the truth is constant);
    None, SQLite's null, when nothing is left."""
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return float(np.mean(xs)) if xs else None


def _failed(feature: int, reason: str, fragments: dict, usage: dict, ledger=None) -> dict:
    metrics = {"ledger": [ledger.to_json()]} if ledger is not None else None
    return {"feature": feature, "status": "failed", "reason": reason,
            "fragments": dbm.dumps(fragments), "metrics": dbm.dumps(metrics) if metrics else None,
            **usage}


def _scored(feature: int, texts: list[str], records, fragments: dict, usage: dict,
            ledger=None) -> dict:
    for key in records[0].details:
        if key not in SUMMARY_KEYS and key != "draw_scores":
            fragments[key] = [r.details.get(key) for r in records]
    metrics = {k: [r.details.get(k) for r in records] for k in SUMMARY_KEYS
               if k in records[0].details}
    if "draw_scores" in records[0].details:  # (explanation samples, example draws)
        metrics["scores"] = [r.details["draw_scores"] for r in records]
    elif len(records) > 1:  # per explanation sample: compare's stability resamples them
        metrics["scores"] = [None if math.isnan(r.score) else r.score for r in records]
    if ledger is not None:
        metrics["ledger"] = [ledger.to_json()]
    scores = [r.score for r in records]
    return {"feature": feature, "status": "scored", "reason": None, "explanation": texts[0],
            "explanations": dbm.dumps(texts), "score": _nanmean(scores),
            "score_top": _nanmean([r.score_top for r in records]),
            "score_random": _nanmean([r.score_random for r in records]),
            "score_spread": float(np.std(scores)) if len(scores) > 1 else None,
            "auroc": _nanmean([r.auroc for r in records]),
            "constant": int(any(r.constant for r in records)),
            "metrics": dbm.dumps(metrics) if metrics else None,
            "fragments": dbm.dumps(fragments), **usage}


def _reason(stage: str, e: Exception) -> str:
    return f"{CALL_FAILED}: {e}" if isinstance(e, LLMCallError) else f"{stage}: {e}"


async def _explain(explainer, shown, n_explanations: int, ff, n_shown: int) -> list[str]:
    shown = drop_unsafe(shown)  # counted once per feature, in the explanation's ledger
    if not shown:
        raise ExplanationFailed("no explainer fragment can be shown safely")
    # Explanations given in a file (scoring/given.py) are looked up by feature; an
    # output-centric explainer (explain_outputs.py) steers the feature first; any other
    # explainer needs only the fragments.
    given = getattr(explainer, "explain_feature", None)
    steered = getattr(explainer, "explain_steered", None)

    def one(i: int):
        if given:
            return given(ff.feature, shown, sample_index=i)
        if steered:
            return steered(ff, n_shown, shown, sample_index=i)
        return explainer.explain(shown, sample_index=i)

    got = await asyncio.gather(*(one(i) for i in range(n_explanations)))
    return [e.text for e in got]


async def _score_all(scorer, texts: list[str], ff: FeatureFragments, n_shown: int) -> list:
    return list(await asyncio.gather(*(scorer.score(t, ff, n_shown) for t in texts)))


async def score_feature(ff: FeatureFragments, explainer, scorers, n_shown: int,
                        n_explanations: int) -> dict[str, dict]:
    """Rows by scorer name: explained n_explanations times, each explanation scored by
    every scorer (in parallel; each scorer's calls billed to its own row)."""
    shown, scoring = ff.explainer_fragments(n_shown), ff.scoring_fragments(n_shown)
    base = {"n_nonzero": ff.n_nonzero, "n_top": n_shown,
            "explainer": [_frag(f) for f in shown], "scoring": [_frag(f) for f in scoring],
            "histogram": histogram(ff)}
    try:
        (texts, explain_meter), explained = await tallied(measure, _explain, explainer, shown,
                                                          n_explanations, ff, n_shown)
    except EndpointAuthError:
        raise  # a rejected key fails every feature alike: stop the run, record nothing
    except (ExplanationFailed, LLMCallError) as e:
        usage = getattr(e, "meter", Meter()).columns("explain_")
        return {s.name: _failed(ff.feature, _reason("explanation", e), dict(base), usage,
                                getattr(e, "ledger", None)) for s in scorers}
    explain_usage = explain_meter.columns("explain_")

    async def one(scorer) -> tuple[str, dict]:
        try:
            (records, meter), ledger = await tallied(measure, _score_all, scorer, texts, ff,
                                                     n_shown)
        except EndpointAuthError:
            raise
        except (ScoringFailed, LLMCallError) as e:
            usage = {**explain_usage, **getattr(e, "meter", Meter()).columns()}
            ledger = getattr(e, "ledger", Ledger())
            ledger.merge(explained.to_json())
            return scorer.name, _failed(ff.feature, _reason(scorer.name, e), dict(base), usage,
                                        ledger)
        usage = {**explain_usage, **meter.columns()}
        ledger.merge(explained.to_json())
        return scorer.name, _scored(ff.feature, texts, records, dict(base), usage, ledger)

    return dict(await asyncio.gather(*(one(s) for s in scorers)))
