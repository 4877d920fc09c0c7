"""Planted-feature toy data (Sharkey et al. 2022): known sparse directions in superposition.

Each sample is a sparse non-negative combination of n_true unit directions in d_model
dimensions; a dictionary method is judged by how well its decoder directions recover
the planted ones (mean max cosine similarity, MMCS).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PlantedFeatures:
    directions: torch.Tensor
    """(n_true, d_model) unit rows."""
    p_active: float
    """Probability that each feature is on in a sample."""
    seed: int

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, d_model): each feature on with p_active, magnitude uniform in [0, 1]."""
        n_true = len(self.directions)
        on = torch.rand(n, n_true, generator=generator) < self.p_active
        mags = torch.rand(n, n_true, generator=generator) * on
        return mags @ self.directions

    def batches(self, batch_size: int, n_batches: int, seed: int = 1) -> Iterator[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        for _ in range(n_batches):
            yield self.sample(batch_size, gen)


def planted_features(n_true: int = 512, d_model: int = 128, p_active: float = 0.01,
                     seed: int = 0) -> PlantedFeatures:
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(n_true, d_model, generator=gen)
    return PlantedFeatures(d / d.norm(dim=1, keepdim=True), p_active, seed)


def mmcs(truth: torch.Tensor, learned: torch.Tensor) -> float:
    """Mean over the true directions of the best |cosine| with any learned direction.

    Absolute value, because a baseline's +/- feature pair shares one direction."""
    t = truth / truth.norm(dim=1, keepdim=True)
    w = learned / learned.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return float((t @ w.T).abs().max(dim=1).values.mean())
