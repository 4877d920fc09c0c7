"""Self-test of the output-side scorers on planted output features.

A planted feature is a direction that raises one word's logit: solved by least squares
through the final norm's scale and the unembedding (W_out d = e_t). The output scorer
passes when every planted direction's output score is above the 95th percentile of
random directions of the same norm (each steered at the same KL). The intervention
scorer passes when, for most planted features, the explanation (the word) beats the other
planted features' explanations: the bootstrap CI over prompts of the difference lies above
0. Both fail when the planted directions are replaced by random ones (`planted=False`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from autointerp import db as dbm
from autointerp.errors import BadInputError
from autointerp.scoring.planted import PlantedOutcome
from autointerp.scoring.selftest import SelftestResult, SelftestSettings, _to_row
from autointerp.scoring.stats import mean_ci

PLANTED_WORDS = ((" Paris", "Paris"), (" dog", "dogs"), (" music", "music"),
                 (" water", "water"), (" money", "money"), (" king", "kings"))
"""(token the planted direction raises, the explanation a perfect explainer would give)."""
VERSION = 1


@dataclass(frozen=True)
class OutputSelftestSettings:
    n_planted: int = 4
    """Planted words (from PLANTED_WORDS) steered."""
    n_random: int = 20
    """Random same-norm directions behind the output score's 95th percentile
    (bench/output_null.py runs 200)."""
    planted: bool = True
    """False: random directions stand in for the planted ones (the test that it fails)."""
    intervention_kl: float = 2.0
    """Target KL of the intervention self-test: at 0.5 a planted word reaches about 0.5%
    probability and 8-token samples of a few prompts rarely show it (measured on SmolLM2:
    one of three planted words passed at 0.5, all three at 2.0; docs/output-scores.md)."""
    hook: str = "resid.20"
    """Where the planted directions are added when no store names a hook point."""
    seed: int = 0


def planted_direction(ctx, token_id: int, norm: float = 1.0):
    """The least-squares d with W_out d = e_t (the token's logit raised, the others kept):
    d = (W_out^T W_out)^-1 W_out[t], the Gram matrix inverted once per context."""
    import torch

    from autointerp.causal.steering import Direction

    if getattr(ctx, "_gram_inv", None) is None:
        W = ctx.W_out.double()
        ctx._gram_inv = torch.linalg.inv(W.T @ W)  # (d_model, d_model)
    d = (ctx._gram_inv @ ctx.W_out[token_id].double()).float()
    return Direction(d * norm / d.norm())


def builtin_prompts(tokenizer):
    """Prompt rows from the builtin corpus's documents (no store given)."""
    import torch

    from autointerp.harvest.corpus import open_corpus

    made: dict = {}

    def prompts(n, n_tokens, exclude, seed):
        if (n, n_tokens) in made:
            return made[n, n_tokens]
        rows = []
        for doc in open_corpus("builtin"):
            # the start of the document only: a builtin document can be a whole book
            ids = tokenizer(doc.text[:20 * n_tokens], add_special_tokens=False)["input_ids"]
            if len(ids) >= n_tokens:
                rows.append(ids[:n_tokens])
            if len(rows) == n:
                made[n, n_tokens] = torch.as_tensor(rows), tuple(range(n))
                return made[n, n_tokens]
        raise BadInputError(f"the builtin corpus has fewer than {n} documents of {n_tokens} tokens")

    return prompts


def selftest_context(steer_settings, settings: OutputSelftestSettings, store=None, db=None,
                     device: str = "auto", loaded=None):
    """SmolLM2 prompted with the builtin corpus, or the store's model and eval fragments."""
    from autointerp.harvest.hook_names import parse_hook
    from autointerp.harvest.models import load_causal_lm
    from autointerp.scoring.steered import SteeringContext

    if store is not None:
        return SteeringContext.for_store(None, store, steer_settings, db, device)
    loaded = loaded or load_causal_lm("smollm2-135m", device, "float32")
    return SteeringContext(loaded, parse_hook(settings.hook, loaded.n_layers), builtin_prompts(loaded.tokenizer),
                           steer_settings, db=db)


def _words(ctx, n: int) -> list[tuple[int, str, str]]:
    tok = ctx.loaded.tokenizer
    out = []
    for word, explanation in PLANTED_WORDS:
        ids = tok(word, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            out.append((ids[0], word, explanation))
    if len(out) < max(2, n):
        raise BadInputError(f"only {len(out)} planted words are one token for this tokenizer")
    return out[:n]


def _directions(ctx, settings: OutputSelftestSettings, words):
    from autointerp.causal.steering import random_direction

    planted = [planted_direction(ctx, t) for t, _, _ in words]
    if settings.planted:
        return planted
    return [random_direction(d, settings.seed + 1000 + i) for i, d in enumerate(planted)]


def _result(kind: str, ctx, outcomes, right, wrong, gap, passed, key: dict) -> SelftestResult:
    rid = hashlib.sha256(dbm.dumps({"kind": kind, "version": VERSION, **ctx.model_id, **key})
                         .encode()).hexdigest()
    return SelftestResult(rid, ctx.loaded.name, "steering", right, wrong, gap, passed,
                          float("nan"), float("nan"), tuple(outcomes), scorer=kind)


def _score_or_nan(ctx, direction, tick) -> float:
    """The output score, or NaN where no strength reached the target KL."""
    from autointerp.scoring.scorers.output import score_direction
    from autointerp.types import ScoringFailed

    try:
        return score_direction(ctx, direction, None, 0).score
    except ScoringFailed:
        return float("nan")
    finally:
        tick()


def output_selftest(ctx, settings: OutputSelftestSettings, tick=lambda: None) -> SelftestResult:
    """Planted directions' output scores against the 95th percentile of random ones."""
    from autointerp.causal.steering import random_direction

    words = _words(ctx, settings.n_planted)
    dirs = _directions(ctx, settings, words)
    randoms = [s for i in range(settings.n_random)
               if not np.isnan(s := _score_or_nan(ctx, random_direction(dirs[0], settings.seed + i), tick))]
    key = {"settings": settings.__dict__, "steer": ctx.s.__dict__}
    if not randoms:  # a model steering cannot move (a re-initialised one): a FAIL, said why
        why = "no random direction reached the target KL (a lower --steer-kl may)"
        nan = (float("nan"),) * 3
        outcomes = [PlantedOutcome(w, f"raises {w!r}", "random directions (95th percentile)",
                                   None, None, why) for _, w, _ in words]
        return _result("output", ctx, outcomes, nan, nan, nan, False, key)
    p95 = float(np.percentile(randoms, 95))
    scores = [np.nan_to_num(_score_or_nan(ctx, d, tick)) for d in dirs]
    outcomes = [PlantedOutcome(w, f"raises {w!r}", "random directions (95th percentile)", s, p95)
                for (_, w, _), s in zip(words, scores, strict=True)]
    right, wrong = mean_ci(scores, seed=settings.seed), mean_ci(randoms, seed=settings.seed)
    gap = mean_ci([s - p95 for s in scores], seed=settings.seed)
    return _result("output", ctx, outcomes, right, wrong, gap, min(scores) > p95, key)


def intervention_selftest(ctx, settings: OutputSelftestSettings) -> SelftestResult:
    """Each planted word's explanation against the other planted words' on its steered text."""
    import copy
    from dataclasses import replace

    from autointerp.scoring.scorers.intervention import deltas, vs_null
    from autointerp.scoring.scorers.output import steer_feature
    from autointerp.types import ScoringFailed

    ctx = copy.copy(ctx)  # the same model and prompts, steered harder
    ctx.s = replace(ctx.s, target_kl=max(ctx.s.target_kl, settings.intervention_kl))
    words = _words(ctx, settings.n_planted)
    texts = [e for _, _, e in words]
    outcomes, diffs, los = [], [], []
    for i, d in enumerate(_directions(ctx, settings, words)):
        try:
            steered = steer_feature(ctx, d, None, 0)
        except ScoringFailed as e:
            outcomes.append(PlantedOutcome(words[i][1], texts[i], "the other planted explanations",
                                           None, None, str(e)))
            diffs.append(float("nan"))
            los.append(float("nan"))
            continue
        conts, _ = ctx.continuations(d, steered["steerer"], steered["calibration"].strength)
        per = deltas(ctx, conts, steered["steerer"].prompts, texts)
        v = vs_null(per[i], np.delete(per, i, axis=0), settings.seed)
        outcomes.append(PlantedOutcome(words[i][1], texts[i], "the other planted explanations",
                                       float(per[i].mean()), v["null_score"],
                                       None if v["vs_null_lo"] > 0 else "CI of the difference includes 0"))
        diffs.append(v["vs_null"])
        los.append(v["vs_null_lo"])
    right = mean_ci([o.right for o in outcomes if o.right is not None], seed=settings.seed)
    wrong = mean_ci([o.wrong for o in outcomes if o.wrong is not None], seed=settings.seed)
    gap = mean_ci([x for x in diffs if not np.isnan(x)], seed=settings.seed)
    passed = sum(lo > 0 for lo in los) > len(los) / 2
    return _result("intervention", ctx, outcomes, right, wrong, gap, passed,
                   {"settings": settings.__dict__, "steer": ctx.s.__dict__})


def run_output_selftest(scorer, db, store=None, settings: OutputSelftestSettings | None = None,
                        device: str = "auto", ctx=None) -> SelftestResult:
    """The self-test of `scorer` (output or intervention), recorded in `selftests`."""
    settings = settings or OutputSelftestSettings()
    ctx = ctx or selftest_context(scorer.s, settings, store, db, device)
    fn = output_selftest if scorer.name == "output" else intervention_selftest
    res = fn(ctx, settings)
    if db is not None:
        db["selftests"].upsert(_to_row(res, SelftestSettings(n_features=max(2, len(res.details)))),
                               pk="id")
    return res
