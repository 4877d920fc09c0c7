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

Tick = Callable[[], None]


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


def greedy(p: Patcher, metric: str, taus: np.ndarray, seed: int = 0,
           tick: Tick | None = None) -> list[CurvePoint]:
    """One point per threshold. Removal candidates are tried against the current set
    several at a time in one batched pass; the first accepted one ends the batch, so the
    result is exactly that of trying them one by one."""
    rng = np.random.default_rng(seed)
    keep = torch.ones(p.n_active)
    current = p.evaluate(keep[None])
    value = float(p.objective(current, metric)[0])
    per_pass = max(1, p.max_batch // p.batch.n_prompts)
    points = []
    for tau in taus:
        pending = [int(i) for i in rng.permutation(keep.nonzero().squeeze(1).numpy())]
        while pending:
            chunk = pending[:per_pass]
            masks = keep.repeat(len(chunk), 1)
            masks[torch.arange(len(chunk)), chunk] = 0
            out = p.evaluate(masks)
            values = p.objective(out, metric)
            used = len(chunk)
            for j in range(len(chunk)):
                if float(values[j]) - value < tau:
                    keep, value, used = masks[j].clone(), float(values[j]), j + 1
                    current = Outcome(out.kl[j:j + 1], None if out.logit_diff is None
                                      else out.logit_diff[j:j + 1])
                    break
            pending = pending[used:]
        points.append(_point(p, "greedy", tau, keep, current))
        if tick:
            tick()
    return points


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
