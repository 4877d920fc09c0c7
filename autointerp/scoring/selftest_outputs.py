"""Self-test of the output-side scorers on planted output features.

A planted feature is a direction at the hook point that raises one word: the gradient of
the word's mean next-token log-prob, over every position of a prompt set disjoint from the
scored prompts, with respect to an offset added at the hook point, then refined twice by
the gradient at the steered point while the word stays among the direction's top tokens
through the unembedding (planted_direction). Solving W_out d = e_t through the final norm
and the unembedding only works near the last layer: at SmolLM2's middle layer 15 such a
direction scored like a random one (the blocks after it undo it). On SmolLM2 at layer 15
and KL 2, " Paris" reaches 2.3% probability after the first gradient and 20% after two
refinements.

Both self-tests steer at KL 2 (`selftest_kl`). The output scorer passes when most planted
directions' output scores are above the 95th percentile of random directions of the same
norm (each steered at the same KL). The intervention
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
from autointerp.scoring.selftest import SelftestResult, _to_row
from autointerp.scoring.stats import mean_ci

PLANTED_WORDS = ((" Paris", "Paris"), (" dog", "dogs"), (" music", "music"),
                 (" water", "water"), (" money", "money"), (" king", "kings"))
"""(token the planted direction raises, the explanation a perfect explainer would give)."""
VERSION = 2


@dataclass(frozen=True)
class OutputSelftestSettings:
    n_planted: int = 4
    """Planted words (from PLANTED_WORDS) steered."""
    n_random: int = 20
    """Random same-norm directions behind the output score's 95th percentile
    (bench/output_null.py runs 200)."""
    planted: bool = True
    """False: random directions stand in for the planted ones (the test that it fails)."""
    selftest_kl: float = 2.0
    """Target KL of both self-tests (or the run's, if higher). At 0.5 a planted word reaches
    a few percent probability at SmolLM2's layer 15 and 8-token samples rarely show it,
    while about one random direction in ten promotes a frequent token and scores as high
    (measured on SmolLM2 at resid.15 against 200 random directions: at KL 0.5 two of four
    planted words beat their 95th percentile, at KL 2 all four beat all 200;
    docs/output-scores.md)."""
    hook: str = "resid.15"
    """Where the planted directions are added when no store names a hook point."""
    seed: int = 0


def planted_direction(ctx, token_id: int, norm: float = 1.0, steps: int = 2):
    """A direction at ctx's hook point that raises the token, found on prompts that the
    scorers do not steer (a second draw of the prompt source leaving out the scored prompts;
    the scored ones where there are too few others). Start from the gradient of the token's
    mean next-token log-prob over every position; then, `steps` times, step along the
    gradient taken at the steered point (the strength that reaches ctx's target KL), as long
    as the token stays among the direction's top tokens through the unembedding."""
    import torch

    from autointerp.causal.steering import Direction, Steerer

    scored = ctx.steerer(set())
    try:
        ids, _ = ctx.prompts(ctx.s.n_prompts, ctx.s.prompt_tokens, set(scored.fragments),
                             ctx.s.seed + 1)
    except BadInputError:
        ids = scored.prompts
    d = _gradient(ctx, ids, token_id, torch.zeros(ctx.loaded.d_model))
    fit = Steerer(ctx.loaded, ctx.hook, ids) if steps else None
    for _ in range(steps):
        cal = fit.calibrate(Direction(d), ctx.s.target_kl, ctx.s.tolerance)
        moved = d + _gradient(ctx, ids, token_id, cal.strength * d)
        moved = moved / moved.norm()
        if token_id not in (ctx.W_out @ moved).topk(ctx.s.top_tokens).indices:
            break
        d = moved
    return Direction(d * norm)


def _gradient(ctx, ids, token_id: int, at):
    """The unit gradient of the token's mean next-token log-prob over every position of
    `ids` with respect to an offset added at the hook point, taken at offset `at`."""
    import torch

    from autointerp.causal import forward

    device = ctx.loaded.device
    offset = torch.zeros(ctx.loaded.d_model, device=device, requires_grad=True)
    base = at.to(device)
    logits = forward.run(ctx.loaded, ids, torch.ones_like(ids),
                         {ctx.hook: lambda x: x + (base + offset).to(x.dtype)}, grad=True)
    objective = logits.float().log_softmax(-1)[..., token_id].mean()
    (g,) = torch.autograd.grad(objective, offset)
    g = g.detach().float().cpu()
    return g / g.norm()


def builtin_prompts(tokenizer):
    """Prompt rows from the builtin corpus's documents (no store given)."""
    import torch

    from autointerp.harvest.corpus import open_corpus

    made: dict = {}

    def prompts(n, n_tokens, exclude, seed):
        key = (n, n_tokens, frozenset(exclude))
        if key in made:
            return made[key]
        rows, chosen = [], []
        for i, doc in enumerate(open_corpus("builtin")):
            if i in exclude:
                continue
            # the start of the document only: a builtin document can be a whole book
            ids = tokenizer(doc.text[:20 * n_tokens], add_special_tokens=False)["input_ids"]
            if len(ids) >= n_tokens:
                rows.append(ids[:n_tokens])
                chosen.append(i)
            if len(rows) == n:
                made[key] = torch.as_tensor(rows), tuple(chosen)
                return made[key]
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


def selftest_id(kind: str, ctx, settings: OutputSelftestSettings) -> str:
    """Everything that decides the verdict: the model, hook point, prompt source, settings."""
    from autointerp.scoring.selftest import fragment_source

    key = {"kind": kind, "version": VERSION, **ctx.model_id, "settings": settings.__dict__,
           "steer": ctx.s.__dict__, "prompts": fragment_source(ctx.store, ctx.loaded.tokenizer)}
    return hashlib.sha256(dbm.dumps(key).encode()).hexdigest()


def _result(kind: str, ctx, settings, outcomes, right, wrong, gap, passed) -> SelftestResult:
    return SelftestResult(selftest_id(kind, ctx, settings), ctx.loaded.name, "steering", right,
                          wrong, gap, passed, float("nan"), float("nan"), tuple(outcomes),
                          scorer=kind)


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

    key_ctx, ctx = ctx, _harder(ctx, settings)
    words = _words(ctx, settings.n_planted)
    dirs = _directions(ctx, settings, words)
    randoms = [s for i in range(settings.n_random)
               if not np.isnan(s := _score_or_nan(ctx, random_direction(dirs[0], settings.seed + i), tick))]
    if not randoms:  # a model steering cannot move (a re-initialised one): a FAIL, said why
        why = "no random direction reached the target KL (a lower --steer-kl may)"
        nan = (float("nan"),) * 3
        outcomes = [PlantedOutcome(w, f"raises {w!r}", "random directions (95th percentile)",
                                   None, None, why) for _, w, _ in words]
        return _result("output", key_ctx, settings, outcomes, nan, nan, nan, False)
    p95 = float(np.percentile(randoms, 95))
    scores = [np.nan_to_num(_score_or_nan(ctx, d, tick)) for d in dirs]
    outcomes = [PlantedOutcome(w, f"raises {w!r}", "random directions (95th percentile)", s, p95)
                for (_, w, _), s in zip(words, scores, strict=True)]
    right, wrong = mean_ci(scores, seed=settings.seed), mean_ci(randoms, seed=settings.seed)
    gap = mean_ci([s - p95 for s in scores], seed=settings.seed)
    # most, as in the intervention self-test: a random direction in ten scores as high as
    # a planted word does at a low KL, so one planted word may fall below by chance
    passed = sum(s > p95 for s in scores) > len(scores) / 2
    return _result("output", key_ctx, settings, outcomes, right, wrong, gap, passed)


def _harder(ctx, settings: OutputSelftestSettings):
    """The same model and prompts, steered to the self-test's KL."""
    import copy
    from dataclasses import replace

    harder = copy.copy(ctx)
    harder.s = replace(ctx.s, target_kl=max(ctx.s.target_kl, settings.selftest_kl))
    return harder


def intervention_selftest(ctx, settings: OutputSelftestSettings) -> SelftestResult:
    """Each planted word's explanation against the other planted words' on its steered text."""
    from autointerp.scoring.scorers.intervention import deltas, vs_null
    from autointerp.scoring.scorers.output import steer_feature
    from autointerp.types import ScoringFailed

    key_ctx, ctx = ctx, _harder(ctx, settings)
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
    return _result("intervention", key_ctx, settings, outcomes, right, wrong, gap, passed)


def run_output_selftest(scorer, db, store=None, settings: OutputSelftestSettings | None = None,
                        device: str = "auto", ctx=None) -> SelftestResult:
    """The self-test of `scorer` (output or intervention), recorded in `selftests`, or read
    back from there when one with the same model, hook point, prompts and settings ran."""
    from autointerp.scoring.selftest import load_selftest

    settings = settings or OutputSelftestSettings()
    ctx = ctx or selftest_context(scorer.s, settings, store, db, device)
    if db is not None and db["selftests"].exists() \
            and (done := load_selftest(db, selftest_id(scorer.name, ctx, settings))) is not None:
        return done
    fn = output_selftest if scorer.name == "output" else intervention_selftest
    res = fn(ctx, settings)
    if db is not None:
        db["selftests"].upsert(_to_row(res, settings), pk="id")  # its own settings
    return res
