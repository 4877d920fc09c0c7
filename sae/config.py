"""Training settings, with defaults chosen so that users need not tune them.

The trainer divides activations by one scalar so that E||x - mean||^2 = 1 and uses a
sum-of-squares reconstruction loss, so the reconstruction term is (about) the FVU
and one L1 coefficient means the same thing for any model, layer or width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from autointerp.errors import BadInputError
from autointerp.sae.modules import ARCHES

DEFAULT_L1 = 0.1
"""L1 coefficient in normalised units. A latent must remove at least this much squared
error (as a fraction of the variance) per unit of activation to be worth firing."""
DEFAULT_K = 32
"""TopK latents per token when --k is not given."""


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    """tied | relu | topk (modules.py)."""
    n_features: int
    """Dictionary size (ratio x d_model)."""
    n_tokens: int
    """Training activations to consume; steps = n_tokens // batch_size."""
    l1: float | None = None
    """L1 coefficient for tied/relu (None: DEFAULT_L1)."""
    k: int | None = None
    """Active latents per token for topk (None: DEFAULT_K)."""
    batch_size: int = 4096
    """Activations per Adam step."""
    lr: float | None = None
    """Adam learning rate (None: 2e-4 / sqrt(n_features / 2^14), as in EleutherAI sparsify)."""
    seed: int = 0
    """Seeds the weight initialisation (the data order is the caller's)."""
    warmup_frac: float = 0.05
    """Fraction of steps over which the learning rate and the L1 coefficient ramp up from 0."""
    decay_frac: float = 0.2
    """Final fraction of steps over which the learning rate decays linearly to 0."""
    aux_coef: float = 1 / 32
    """Weight of the AuxK dead-latent loss for topk (Gao et al. 2024)."""
    dead_tokens: int | None = None
    """A latent is dead after this many tokens without firing (None: min(10M, n_tokens/10))."""
    checkpoint_every: int = 1000
    """Steps between checkpoints (one is always written at the end)."""

    def __post_init__(self):
        if self.arch not in ARCHES:
            raise BadInputError(f"unknown --arch {self.arch!r}; choose one of {', '.join(ARCHES)}")
        if self.arch == "topk" and self.l1 is not None:
            raise BadInputError("--l1 applies to tied and relu SAEs; topk takes --k")
        if self.arch != "topk" and self.k is not None:
            raise BadInputError(f"--k applies to topk SAEs; {self.arch} takes --l1")
        if self.n_features < 1:
            raise BadInputError(f"the dictionary needs at least one feature, got {self.n_features}")
        if self.k is not None and not 0 < self.k <= self.n_features:
            raise BadInputError(f"--k must be in 1..{self.n_features}, got {self.k}")
        if self.l1 is not None and self.l1 < 0:
            raise BadInputError(f"--l1 must be >= 0, got {self.l1}")
        if self.batch_size < 1 or self.n_tokens < self.batch_size:
            raise BadInputError(f"--tokens ({self.n_tokens}) must be at least one batch "
                                f"(--batch-size {self.batch_size})")
        if self.checkpoint_every < 1:
            raise BadInputError(f"--checkpoint-every must be at least 1, got {self.checkpoint_every}")
        if self.lr is not None and not self.lr > 0:
            raise BadInputError(f"--lr must be > 0, got {self.lr}")

    @property
    def n_steps(self) -> int:
        return self.n_tokens // self.batch_size

    @property
    def l1_coef(self) -> float:
        return DEFAULT_L1 if self.l1 is None else self.l1

    @property
    def topk(self) -> int | None:
        return (self.k or DEFAULT_K) if self.arch == "topk" else None

    @property
    def learning_rate(self) -> float:
        return self.lr or 2e-4 / math.sqrt(self.n_features / 2**14)

    @property
    def dead_after(self) -> int:
        return self.dead_tokens or min(10_000_000, max(self.n_tokens // 10, self.batch_size))

    def hyperparameters(self) -> dict:
        """Every setting, with the defaults resolved (what goes into the dictionary's meta)."""
        out = asdict(self)
        out.update(l1=self.l1_coef if self.arch != "topk" else None, k=self.topk,
                   lr=self.learning_rate, dead_tokens=self.dead_after)
        return out

    def schedule(self, step: int) -> tuple[float, float]:
        """(learning rate, L1 coefficient) at `step`: linear warm-up, linear final decay."""
        warm = max(1, round(self.warmup_frac * self.n_steps))
        ramp = min(1.0, (step + 1) / warm)
        decay_start = self.n_steps * (1 - self.decay_frac)
        decay = 1.0 if step < decay_start else max(0.0, (self.n_steps - step) / (self.n_steps - decay_start))
        return self.learning_rate * ramp * decay, self.l1_coef * ramp
