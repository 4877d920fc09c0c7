"""Attribution patching: rank features by a first-order estimate of what patching each one
alone does (Nanda 2023; Syed et al. 2023), in one backward pass instead of one forward pass
per feature, and integrated gradients (Sundararajan et al. 2017) along clean -> all patched.
"""

from __future__ import annotations

import torch

from autointerp.causal.patching import Patcher
from autointerp.errors import BadInputError

ATTRIBUTIONS = ("grad", "ig")


def attribution_scores(patcher: Patcher, metric: str, method: str = "grad",
                       steps: int = 10) -> torch.Tensor:
    """(n_active,) estimated change of the objective when feature i alone is patched; the
    most negative moves the output furthest towards the counterfactual.

    grad: gradient x (c_cf - c_clean) at the clean point. ig: the same gradient averaged
    over `steps` midpoints of the straight path from none to all patched."""
    if method not in ATTRIBUTIONS:
        raise BadInputError(f"unknown attribution {method!r}: use {' or '.join(ATTRIBUTIONS)}")
    if steps < 1:
        raise BadInputError(f"integrated gradients need at least one step, got {steps}")
    ones = torch.ones(patcher.n_active)
    if method == "grad":
        return patcher.gradient(0 * ones, metric)
    alphas = (torch.arange(steps) + 0.5) / steps
    return torch.stack([patcher.gradient(a * ones, metric) for a in alphas]).mean(0)


def exact_single_effects(patcher: Patcher, metric: str) -> torch.Tensor:
    """(n_active,) the exact change of the objective when feature i alone is patched: one
    mask per feature, what attribution approximates."""
    none = patcher.objective(patcher.evaluate(torch.zeros(1, patcher.n_active)), metric)
    singles = patcher.objective(patcher.evaluate(torch.eye(patcher.n_active)), metric)
    return singles - none
