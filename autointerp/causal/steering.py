"""Steering: add s * d_i to the activation at a dictionary's hook point, at every position.

x_steered = x + s * d_i keeps whatever the dictionary does not reconstruct, exactly as
patching keeps the clean reconstruction error: it is the model's own activation with
feature i's coefficient raised by s (for a dictionary that normalises its input, d_i is
scaled back by each position's own statistics, as its reconstruction is).

Strengths are not comparable across features or methods (decoder norms differ, and so
do the directions' effects), so s is chosen per feature to hit a target effect: the mean
over a prompt set of KL(P_clean || P_steered) of the next token, found by bisection in
log space (every step recorded). Arad et al. (2025) steer at a fixed x10 instead; a fixed
strength favours whichever method has the larger decoder norms.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from autointerp.causal import forward
from autointerp.causal.patching import kl_divergence
from autointerp.errors import BadInputError
from autointerp.harvest.hooks import Hook
from autointerp.harvest.models import LoadedModel


@dataclass(frozen=True)
class Direction:
    """What steering adds at each position, per unit of strength."""

    vector: torch.Tensor  # (d_model,)
    input_norm: str = "none"
    """The dictionary's input normalisation, undone per position like its reconstruction."""

    @property
    def norm(self) -> float:
        return float(self.vector.norm())


def feature_direction(dictionary, feature: int) -> Direction:
    """Feature `feature`'s decoder row; encode-only dictionaries (transcoders) are refused:
    their decoder writes another hook point than the one they read."""
    if dictionary.encode_only:
        raise BadInputError("an encode-only dictionary (transcoder) cannot steer: its decoder "
                            "predicts another hook point than the one it reads")
    return Direction(dictionary.W_dec[feature].detach().float().cpu(), dictionary.input_norm)


def random_direction(like: Direction, seed: int) -> Direction:
    """A direction drawn uniformly on the sphere with the same norm as `like`."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(like.vector.shape, generator=g)
    return Direction(v * like.norm / v.norm(), like.input_norm)


SATURATED = 3
"""Doublings of the strength in a row that leave the KL within 1% end the search below the
target: a direction (or a re-initialised model) whose effect has saturated never reaches
it, and 40 more doublings would only cost forward passes."""


@dataclass(frozen=True)
class Calibration:
    """The strength whose mean next-token KL over the prompts is closest to the target."""

    strength: float
    kl: float
    target: float
    steps: tuple[tuple[float, float], ...]
    """Every (strength, mean KL) tried, in order."""
    reached: bool
    """|kl - target| <= the tolerance asked for."""


class Steerer:
    """One model, one hook point and one prompt set (P prompts of T tokens, no padding);
    counts its forward passes, generated tokens and seconds."""

    def __init__(self, loaded: LoadedModel, hook: Hook, prompts: torch.Tensor):
        if prompts.ndim != 2 or prompts.shape[0] < 1:
            raise BadInputError("steering needs at least one prompt")
        self.loaded, self.hook, self.prompts = loaded, hook, prompts
        self.n_forward, self.n_generated, self.seconds = 0, 0, 0.0
        self.start = None
        self.logp_clean = self.last_logp(None, 0.0)  # (P, vocab)
        mask = torch.ones_like(prompts)
        with torch.inference_mode():
            x = forward.run(loaded, prompts, mask, read=hook)
        self.activation_norm = float(x.float().norm(dim=-1).mean())
        """Mean L2 norm of the clean activation: where the strength search starts."""
        if hook.kind == "resid":  # as patching does: skip the blocks whose output is x
            self.start = (x, forward.returns_tuple(loaded, hook, prompts, mask))
            if not torch.allclose(self.last_logp(None, 0.0), self.logp_clean, atol=1e-4):
                self.start = None  # a family whose blocks cannot be stood in for

    def _edit(self, direction: Direction | None, s: float):
        if direction is None or s == 0:
            return {}
        v = direction.vector

        def add(x: torch.Tensor) -> torch.Tensor:
            d = v.to(x.device, torch.float32)
            if direction.input_norm == "layer_norm":
                d = d * x.float().std(-1, keepdim=True)
            elif direction.input_norm == "constant_norm_rescale":
                d = d * x.float().norm(dim=-1, keepdim=True) / x.shape[-1] ** 0.5
            return (x.float() + s * d).to(x.dtype)

        return {self.hook: add}

    def _logits(self, ids: torch.Tensor, direction: Direction | None, s: float) -> torch.Tensor:
        """Last-position logits (P, vocab) of `ids` with the steering edit at every position."""
        started = time.perf_counter()
        edits, last = self._edit(direction, s), torch.tensor([ids.shape[1] - 1])
        with torch.inference_mode():
            if self.start is not None and ids is self.prompts:
                x, as_tuple = self.start
                given = edits[self.hook](x) if edits else x
                logits = forward.run(self.loaded, ids, torch.ones_like(ids), positions=last,
                                     start=(self.hook, given, as_tuple))
            else:
                logits = forward.run(self.loaded, ids, torch.ones_like(ids), edits, positions=last)
        self.n_forward += 1
        self.seconds += time.perf_counter() - started
        return logits[:, -1].float().cpu()

    def last_logp(self, direction: Direction | None, s: float) -> torch.Tensor:
        """(P, vocab) next-token log-probs after each prompt, steered by s * direction."""
        return self._logits(self.prompts, direction, s).log_softmax(-1)

    def kl(self, direction: Direction, s: float) -> float:
        """Mean over prompts of KL(P_clean || P_steered) of the next token."""
        return float(kl_divergence(self.logp_clean, self.last_logp(direction, s)).mean())

    def calibrate(self, direction: Direction, target: float = 0.5, tol: float = 0.02,
                  max_steps: int = 40) -> Calibration:
        """Bracket the target by doubling or halving s, then bisect log(s)."""
        if target <= 0 or direction.norm == 0:
            raise BadInputError("steering needs a positive target KL and a non-zero direction")
        steps: list[tuple[float, float]] = []

        def tried(s: float) -> float:
            steps.append((s, self.kl(direction, s)))
            return steps[-1][1]

        s = 0.25 * self.activation_norm / direction.norm
        lo = hi = None
        flat = 0  # doublings in a row that raised the KL by under 1%: it has saturated
        while len(steps) < max_steps and (lo is None or hi is None) and flat < SATURATED:
            k = tried(s)
            if abs(k - target) <= tol:
                break
            if k < target:
                grew = len(steps) < 2 or steps[-2][0] > s or k > 1.01 * steps[-2][1]
                flat = 0 if grew else flat + 1
                lo, s = s, s * 2
            else:
                hi, s = s, s / 2
        while lo is not None and hi is not None and len(steps) < max_steps:
            k = tried(math.sqrt(lo * hi))
            if abs(k - target) <= tol:
                break
            lo, hi = (steps[-1][0], hi) if k < target else (lo, steps[-1][0])
        best = min(steps, key=lambda p: abs(p[1] - target))
        return Calibration(best[0], best[1], target, tuple(steps), abs(best[1] - target) <= tol)

    def generate(self, direction: Direction | None, s: float, n_tokens: int,
                 seed: int) -> torch.Tensor:
        """(P, n_tokens) sampled continuations (temperature 1), steered at every position.
        The sampler's random stream depends only on `seed`, so the clean and the steered
        continuations of a prompt share their random draws and differ by the steering only.
        Each step after the first reads the model's key-value cache: the edit is applied
        position by position, so the new token's activation gets it as a full pass would
        (checked against full passes by tests/test_steering.py), at a fraction of the cost."""
        started = time.perf_counter()
        g = torch.Generator().manual_seed(seed)
        device = self.loaded.device
        step = self.prompts.to(device)
        model = self.loaded.model
        # transformers 5 names the cache argument and output `cache`, 4.x `past_key_values`
        name = "cache" if "cache" in inspect.signature(model.forward).parameters \
            else "past_key_values"
        mask, past, out = torch.ones_like(step), None, []
        with torch.inference_mode(), forward.edited(model, self._edit(direction, s)):
            for _ in range(n_tokens):
                res = model(input_ids=step, attention_mask=mask, use_cache=True, **{name: past})
                past = getattr(res, name)
                probs = res.logits[:, -1].float().cpu().softmax(-1)
                out.append(torch.multinomial(probs, 1, generator=g))
                step = out[-1].to(device)
                mask = torch.cat([mask, torch.ones_like(step)], dim=1)
                self.n_forward += 1
        self.n_generated += n_tokens * len(self.prompts)
        self.seconds += time.perf_counter() - started
        return torch.cat(out, dim=1)

    def costs(self) -> dict:
        return {"forward_passes": self.n_forward, "generated_tokens": self.n_generated,
                "seconds": round(self.seconds, 3)}


def prompt_rows(store, n_prompts: int, n_tokens: int, exclude: set[int], seed: int = 0
                ) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The first n_tokens of n_prompts eval fragments (held-out documents), drawn in a
    seeded order and skipping the fragments in `exclude` (those the explainer saw):
    (prompt ids (n_prompts, n_tokens), their eval-fragment indices)."""
    if n_tokens > store.fragment_len:
        raise BadInputError(f"--steer-prompt-tokens {n_tokens} is longer than the store's "
                            f"{store.fragment_len}-token fragments")
    order = np.random.default_rng(seed).permutation(store.n_eval_fragments)
    chosen = [int(i) for i in order if int(i) not in exclude][:n_prompts]
    if len(chosen) < n_prompts:
        raise BadInputError(f"the store has {len(chosen)} eval fragments outside the explainer's "
                            f"examples; steering asks for {n_prompts} prompts")
    rows = [torch.as_tensor(store.eval_fragment_tokens(i)[:n_tokens].astype(np.int64))
            for i in chosen]
    return torch.stack(rows), tuple(chosen)
