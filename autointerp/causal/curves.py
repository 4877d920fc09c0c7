"""Feature-identification curves: how many patched features, and how large an edit, it
takes to move the output to the counterfactual's (Cunningham et al. 2023, Figure 3).

greedy: the paper's elimination. Start with every feature patched; for each threshold tau
in logspace(-5, 0, n), in a random order, un-patch each feature whose removal raises the
objective by less than tau. Unlike the released code, each point's edit magnitude is
recomputed for the set actually kept.
topk: patch the k best features of an attribution ranking, for growing k.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from autointerp.causal.patching import Outcome, Patcher

Tick = Callable[..., None]
"""Called with no argument when a point is done, with 0 after each batched pass."""


@dataclass(frozen=True)
class CurvePoint:
    dictionary: str
    method: str
    """none | all | greedy | grad | ig"""
    param: float
    """The threshold tau (greedy) or k (top-k); 0 for none, n for all."""
    n_patched: int
    kl: float
    logit_diff: float | None
    edit_norm: float
    """Mean L2 norm of the edit over the prompts' real positions."""


def _point(p: Patcher, method: str, param: float, mask: torch.Tensor, out: Outcome,
           row: int = 0) -> CurvePoint:
    ld = None if out.logit_diff is None else float(out.logit_diff[row])
    return CurvePoint(p.basis.label, method, float(param), int(mask.sum()), float(out.kl[row]),
                      ld, p.edit_norm(mask))


def endpoints(p: Patcher) -> list[CurvePoint]:
    """None patched (the clean run) and all patched."""
    masks = torch.stack([torch.zeros(p.n_active), torch.ones(p.n_active)])
    out = p.evaluate(masks)
    return [_point(p, "none", 0, masks[0], out, 0), _point(p, "all", p.n_active, masks[1], out, 1)]


def thresholds(n: int, scale: float = 1.0) -> np.ndarray:
    return np.logspace(-5, 0, n) * scale


@dataclass
class _Trial:
    """A candidate's last removal, tried against the kept set of `version`."""

    version: int
    rise: float
    """How much the objective rose."""
    value: float
    outcome: Outcome
    """The objective and metrics of the set without the candidate."""


def greedy(p: Patcher, metric: str, taus: np.ndarray, seed: int = 0,
           tick: Tick | None = None) -> list[CurvePoint]:
    """One point per threshold, exactly as trying the candidates one by one (see _decide).

    Two things save passes without changing a decision. A candidate last tried against
    the very set still kept (nothing removed since, e.g. on a plateau of thresholds) is
    decided from that trial. The others go through batched passes that speculate on each
    outcome: the rise a candidate's removal caused when last tried (against a larger
    set) predicts it against the new threshold; one never tried is predicted like the
    last one settled."""
    rng = np.random.default_rng(seed)
    keep = torch.ones(p.n_active)
    current = p.evaluate(keep[None])
    value = float(p.objective(current, metric)[0])
    per_pass = max(1, p.max_batch // p.batch.n_prompts)
    points, last_accepted, version = [], False, 0
    trials: dict[int, _Trial] = {}
    for tau in taus:
        pending = [int(i) for i in rng.permutation(keep.nonzero().squeeze(1).numpy())]
        while pending:
            known = trials.get(pending[0])
            if known is not None and known.version == version:  # tried against this set
                last_accepted = known.rise < tau
                if last_accepted:
                    keep[pending[0]] = 0
                    value, current, version = known.value, known.outcome, version + 1
                pending = pending[1:]
                continue
            chunk = pending[:per_pass]
            guess = [trials[c].rise < tau if c in trials else last_accepted for c in chunk]
            used, keep, value, current, last_accepted, version = _decide(
                p, metric, tau, keep, value, current, chunk, guess, trials, version)
            pending = pending[used:]
            if tick:
                tick(0)
        points.append(_point(p, "greedy", tau, keep, current))
        if tick:
            tick()
    return points


def _decide(p: Patcher, metric: str, tau: float, keep: torch.Tensor, value: float,
            current: Outcome, chunk: list[int], guess: list[bool], trials: dict[int, _Trial],
            version: int):
    """Settle the first candidates of `chunk` in one batched pass, exactly as one by one.

    Row j removes chunk[j] from the set that the guesses for chunk[:j] lead to. While the
    guesses hold, each row was tried against the right set, so the decisions up to and
    including the first wrong guess stand; the rows after it are discarded. (Guessing
    every removal refused tries each candidate alone; guessing every one accepted
    removes them cumulatively.) Each settled row is recorded in `trials`.
    Returns (candidates settled, keep, value, outcome, whether the last settled was
    removed, the kept set's version)."""
    masks = keep.repeat(len(chunk), 1)
    state = keep.clone()
    for j, c in enumerate(chunk):
        masks[j] = state
        masks[j, c] = 0
        if guess[j]:
            state[c] = 0
    out = p.evaluate(masks)
    values = p.objective(out, metric)
    for j, c in enumerate(chunk):
        row = Outcome(out.kl[j:j + 1], None if out.logit_diff is None else out.logit_diff[j:j + 1])
        trials[c] = _Trial(version, float(values[j]) - value, float(values[j]), row)
        accept = trials[c].rise < tau
        if accept:
            keep, value, current, version = masks[j].clone(), float(values[j]), row, version + 1
        if accept != guess[j]:  # the later rows assumed the other outcome
            return j + 1, keep, value, current, accept, version
    return len(chunk), keep, value, current, accept, version


def k_grid(n: int) -> list[int]:
    """1, 2, 4, ... and n: O(log n) points, each one batched forward pass's worth."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def topk_curve(p: Patcher, scores: torch.Tensor, method: str,
               ks: list[int] | None = None) -> list[CurvePoint]:
    """Patch the k features with the most negative scores, for each k."""
    order = scores.argsort()
    ks = ks or k_grid(p.n_active)
    masks = torch.zeros(len(ks), p.n_active)
    for row, k in enumerate(ks):
        masks[row, order[:k]] = 1
    out = p.evaluate(masks)
    return [_point(p, method, k, masks[row], out, row) for row, k in enumerate(ks)]
