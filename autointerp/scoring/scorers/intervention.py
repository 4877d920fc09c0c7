"""Intervention score: does the explanation predict what steering the feature does to text?

The method of Paulo et al. (delphi's paper, section 3.3.5), with the subject model itself
as scorer. For each held-out prompt, a short continuation is sampled clean and steered at
the KL-matched strength (same seed, so they share their random draws). With

    S(E | passage) = -log P(E's tokens | passage + ' The above passage contains an amplified amount of "')

the score of explanation E is the mean over prompts of S_clean - S_steered: how much more
likely E becomes once the feature is steered. Its null is the same score with the run's
explanations shuffled across features (`finish`), reported as the difference over the
null with a bootstrap CI over prompts; the random-direction row is the same score of a
random direction of the same norm.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import torch

from autointerp.causal import forward
from autointerp.scoring.scorers.base import ScoreRecord
from autointerp.scoring.scorers.output import random_rows_todo, steer_feature, write_random_row
from autointerp.scoring.stats import mean_ci
from autointerp.scoring.steered import SteeringContext, SteerSettings
from autointerp.types import ScoringFailed

TEMPLATE = ' The above passage contains an amplified amount of "'
BATCH = 16
"""Sequences per forward pass of the passage scorer (bounds the logits' memory)."""


def explanation_logprobs(ctx: SteeringContext, passages: list[list[int]],
                         explanations: list[str]) -> np.ndarray:
    """(n_explanations, n_passages): log P(E's tokens | passage + TEMPLATE) under the
    subject model, in padded batches."""
    tok = ctx.loaded.tokenizer
    template = tok(TEMPLATE, add_special_tokens=False)["input_ids"]
    e_ids = [tok(e.strip(), add_special_tokens=False)["input_ids"] for e in explanations]
    seqs = [(i, j, p + template, e) for i, e in enumerate(e_ids) for j, p in enumerate(passages)]
    out = np.zeros((len(explanations), len(passages)))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for s in range(0, len(seqs), BATCH):
        chunk = seqs[s:s + BATCH]
        width = max(len(c[2]) + len(c[3]) for c in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, (_, _, prefix, e) in enumerate(chunk):
            row = prefix + e
            ids[r, :len(row)], mask[r, :len(row)] = torch.as_tensor(row), 1
        with torch.inference_mode():
            logp = forward.run(ctx.loaded, ids, mask).float().log_softmax(-1).cpu()
        for r, (i, j, prefix, e) in enumerate(chunk):
            where = torch.arange(len(prefix) - 1, len(prefix) + len(e) - 1)
            out[i, j] = float(logp[r, where, torch.as_tensor(e)].sum())
    return out


def _passages(continuations: dict, prompts: torch.Tensor) -> list[list[int]]:
    """Clean passages (prompt + clean continuation) then steered ones."""
    rows = prompts.tolist()
    return ([p + c for p, c in zip(rows, continuations["clean"], strict=True)]
            + [p + c for p, c in zip(rows, continuations["steered"], strict=True)])


def deltas(ctx: SteeringContext, continuations: dict, prompts: torch.Tensor,
           explanations: list[str]) -> np.ndarray:
    """(n_explanations, P): S_clean - S_steered per prompt = log P(E | steered) - log P(E | clean)."""
    both = explanation_logprobs(ctx, _passages(continuations, prompts), explanations)
    P = len(prompts)
    return both[:, P:] - both[:, :P]


async def client_logprobs(client, tokenizer, passages: list[list[int]],
                          explanations: list[str]) -> np.ndarray:
    """explanation_logprobs through any client that returns prompt logprobs (vLLM,
    llama.cpp, in process): the passage is decoded to text, and E's log-prob is the sum
    over the prompt tokens that end past the prefix."""
    from autointerp.llm.base import CompletionRequest

    async def one(prefix: str, e: str) -> float:
        c = await client.complete(CompletionRequest(model="", prompt=prefix + e, max_tokens=1,
                                                    prompt_logprobs=1))
        if not c.prompt_tokens:
            raise ScoringFailed(f"{client.name} returned no prompt logprobs")
        total, end = 0.0, 0
        for t in c.prompt_tokens:
            end += len(t.token)
            if end > len(prefix):
                total += t.logprob or 0.0
        return total

    prefixes = [tokenizer.decode(p) + TEMPLATE for p in passages]
    got = await asyncio.gather(*(one(p, e.strip()) for e in explanations for p in prefixes))
    return np.asarray(got, dtype=float).reshape(len(explanations), len(passages))


async def deltas_any(ctx: SteeringContext, client, continuations: dict, prompts: torch.Tensor,
                     explanations: list[str]) -> np.ndarray:
    """deltas with the subject model (client None) or through `client`."""
    if client is None:
        return deltas(ctx, continuations, prompts, explanations)
    both = await client_logprobs(client, ctx.loaded.tokenizer, _passages(continuations, prompts),
                                 explanations)
    P = len(prompts)
    return both[:, P:] - both[:, :P]


def vs_null(own: np.ndarray, null: np.ndarray, seed: int = 0) -> dict:
    """Per-prompt own (P,) minus the mean of the null explanations' (k, P): mean and 95%
    bootstrap CI over prompts."""
    diff = own - null.mean(0)
    mean, lo, hi = mean_ci(diff.tolist(), seed=seed)
    return {"null_score": float(null.mean()), "vs_null": mean, "vs_null_lo": lo, "vs_null_hi": hi}


class InterventionScorer:
    name = "intervention"

    def __init__(self, settings: SteerSettings = SteerSettings(), client=None):
        self.s = settings
        self.ctx: SteeringContext | None = None
        self.client = client
        """None: the subject model reads the log-probs; else this client (the simulator's)."""

    def settings(self) -> dict:
        from dataclasses import asdict

        return {"scorer": self.name, **asdict(self.s), "template": TEMPLATE, "version": 1,
                "by": "subject model" if self.client is None else self.client.name}

    def bind(self, ctx: SteeringContext) -> None:
        self.ctx = ctx

    async def prepare(self) -> None:
        return None

    async def score(self, explanation: str, ff, n_shown: int) -> ScoreRecord:
        if self.ctx is None:
            raise ScoringFailed("the intervention scorer was not given the run's model")
        return await score_intervention(self.ctx, self.ctx.direction(ff.feature), explanation, ff,
                                        n_shown, self.client)

    async def finish(self, db, run_id: str) -> None:
        """The shuffled-explanation null of every scored feature of the run, and the
        random-direction row (a random direction of the same norm, the same explanation)."""
        if self.ctx is None:
            return
        ctx = self.ctx
        await shuffled_null(ctx, db, run_id, self.s, self.client)
        if self.s.random_rows:
            await add_random_rows_async(ctx, db, run_id, self.client)


async def add_random_rows_async(ctx: SteeringContext, db, run_id: str, client) -> None:
    """The random-direction row (output.add_random_rows), awaiting the client."""
    for feature, text, d, metrics in random_rows_todo(ctx, db, run_id):
        try:
            value = (await score_intervention(ctx, d, text, None, 0, client)).score
        except ScoringFailed:
            value = None
        write_random_row(db, run_id, feature, metrics, value)


async def score_intervention(ctx: SteeringContext, direction, explanation: str, ff,
                             n_shown: int, client=None) -> ScoreRecord:
    started = time.perf_counter()
    steered = steer_feature(ctx, direction, ff, n_shown)
    steerer, cal = steered["steerer"], steered["calibration"]
    before = steerer.costs()
    conts, hit = ctx.continuations(direction, steerer, cal.strength)
    per_prompt = (await deltas_any(ctx, client, conts, steerer.prompts, [explanation]))[0]
    n_seqs = 4 * len(per_prompt)  # clean and steered passages, and the two generations
    costs = {"forward_passes": steerer.costs()["forward_passes"] - before["forward_passes"]
             + math.ceil(2 * len(per_prompt) / BATCH)
             + (0 if steered["cached"] else len(cal.steps)),
             "generated_tokens": 0 if hit else 2 * len(per_prompt) * ctx.s.continuation_tokens,
             "seconds": round(time.perf_counter() - started, 3), "sequences": n_seqs}
    details = {"strength": cal.strength, "kl": cal.kl,
               "promoted": ctx.decode(steered["promoted"]),
               "suppressed": ctx.decode(steered["suppressed"]),
               "prompt_fragments": list(steerer.fragments),
               "continuations": {k: ["".join(ctx.decode(np.asarray(c))) for c in v]
                                 for k, v in conts.items()},
               "continuation_ids": conts, "prompt_ids": steerer.prompts.tolist(), "per_prompt": [round(float(x), 5) for x in per_prompt],
               "costs": costs}
    return ScoreRecord(float(per_prompt.mean()), details=details)


async def shuffled_null(ctx: SteeringContext, db, run_id: str, s: SteerSettings,
                        client=None) -> None:
    """For each scored feature, the score of n_null other features' explanations on its own
    continuations; written into the row's `metrics` as the difference over that null."""
    from autointerp import db as dbm
    from autointerp.scoring.planted import derangement

    rows = list(db.query("select feature, explanation, fragments, metrics from features where "
                         "run_id = ? and status = 'scored' order by feature", [run_id]))
    if len(rows) < 2:
        return
    texts = [r["explanation"] for r in rows]
    shifts = [derangement(len(rows), s.seed + k) for k in range(min(s.n_null, len(rows) - 1))]
    for i, r in enumerate(rows):
        metrics = dbm.loads(r["metrics"]) if r["metrics"] else {}
        if "vs_null" in metrics:
            continue
        frag = dbm.loads(r["fragments"])
        conts = frag["continuation_ids"][0]
        prompts = torch.as_tensor(frag["prompt_ids"][0])
        null = await deltas_any(ctx, client, conts, prompts, [texts[d[i]] for d in shifts])
        own = np.asarray(frag["per_prompt"][0])
        metrics.update(vs_null(own, null, s.seed))
        db["features"].update((run_id, r["feature"]), {"metrics": dbm.dumps(metrics)})
