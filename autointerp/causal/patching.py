"""Exact activation patching in a dictionary basis (Cunningham et al. 2023, section 4).

For a set S of features, at every position of the clean prompt,

    x_patched = x_clean + sum_{i in S} (c_cf,i - c_clean,i) d_i

so the clean reconstruction error is kept. A set is a 0/1 mask over the features that
differ between the two prompts somewhere (the others cannot change anything), and many
masks go through the model in one batched forward pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from autointerp.causal import forward
from autointerp.causal.basis import Basis
from autointerp.causal.tasks import TaskBatch
from autointerp.errors import BadInputError
from autointerp.harvest.hooks import Hook
from autointerp.harvest.models import LoadedModel

METRICS = ("kl", "logit-diff")


@dataclass(frozen=True)
class Outcome:
    """Metrics of a batch of masks, each averaged over prompts."""

    kl: torch.Tensor  # (n_masks,) mean KL(P_patched || P_cf) at the last position
    logit_diff: torch.Tensor | None  # (n_masks,) mean logit(answer) - logit(distractor)


def kl_divergence(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """KL(P || P_ref) over the last axis (steering.py measures its strength with it too)."""
    return (logp.exp() * (logp - logp_ref)).sum(-1)


class Patcher:
    """One basis at one hook point on one task batch; counts its forward passes."""

    def __init__(self, loaded: LoadedModel, hook: Hook, basis: Basis, batch: TaskBatch,
                 max_batch: int = 64):
        self.loaded, self.hook, self.basis, self.batch = loaded, hook, basis, batch
        self.max_batch = max_batch
        """Sequences per forward pass (masks x prompts), which bounds memory."""
        if basis.W_dec.shape[1] != loaded.d_model:
            raise BadInputError(f"{basis.label}: dictionary width {basis.W_dec.shape[1]} does not "
                                f"match {loaded.name}'s d_model {loaded.d_model}")
        self.n_forward = 0
        self.seconds = 0.0
        raw = forward.run(loaded, batch.clean_ids, batch.mask, read=hook)
        x_clean = raw.float()
        x_cf = forward.run(loaded, batch.cf_ids, batch.mask, read=hook).float()
        P, T, d = x_clean.shape
        real = batch.mask.to(x_clean.device).bool().reshape(-1)
        delta = (basis.coefficients(x_cf.reshape(-1, d).to(basis.W_dec.device))
                 - basis.coefficients(x_clean.reshape(-1, d).to(basis.W_dec.device)))
        delta[~real.to(delta.device)] = 0  # padding positions take no part
        # Only features that differ somewhere can change the output; keeping just those
        # bounds memory and work for 16k-feature dictionaries.
        self.active = (delta.abs().amax(0) > 0).nonzero().squeeze(1)  # (n_active,)
        device = loaded.device
        self.delta = delta[:, self.active].reshape(P, T, -1).to(device)  # (P, T, n_active)
        self.W_dec = basis.W_dec[self.active].to(device)  # (n_active, d_model)
        self.n_positions = int(real.sum())
        self.real = real.reshape(P, T).to(device)
        # logits are needed only at each prompt's last position
        self.positions, self.last_index = torch.unique(batch.last, return_inverse=True)
        self.logp_clean = self._last_logp(self._full(batch.clean_ids))
        self.logp_cf = self._last_logp(self._full(batch.cf_ids))
        self.start = None
        if hook.kind == "resid":  # skip the blocks up to the hook: their output is x_clean
            self.start = (raw.detach(), forward.returns_tuple(loaded, hook, batch.clean_ids, batch.mask))
            with torch.inference_mode():
                check = self._logp(torch.zeros(1, self.n_active))[0]
            if not torch.allclose(check, self.logp_clean, atol=1e-4):
                self.start = None  # a family whose blocks cannot be stood in for
            self.n_forward, self.seconds = 0, 0.0

    def _full(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return forward.run(self.loaded, ids, self.batch.mask, positions=self.positions)

    def _run(self, rows: slice, n: int, edits: torch.Tensor, grad: bool) -> torch.Tensor:
        """Last-position logits of prompts `rows` repeated n times, edited by `edits`
        (n * len(rows), T, d_model) at the hook point."""
        ids = self.batch.clean_ids[rows].repeat(n, 1)
        attention = self.batch.mask[rows].repeat(n, 1)
        started = time.perf_counter()
        if self.start is None:
            logits = forward.run(self.loaded, ids, attention, {self.hook: lambda x: x + edits.to(x.dtype)},
                                 grad=grad, positions=self.positions)
        else:
            x, as_tuple = self.start
            given = x[rows].repeat(n, 1, 1) + edits.to(x.dtype)
            logits = forward.run(self.loaded, ids, attention, grad=grad, positions=self.positions,
                                 start=(self.hook, given, as_tuple))
        self.n_forward += 1
        self.seconds += time.perf_counter() - started
        last = self.last_index[rows].to(logits.device).repeat(n)
        return logits[torch.arange(len(ids), device=logits.device), last].float().log_softmax(-1)

    @property
    def n_active(self) -> int:
        return len(self.active)

    def _last_logp(self, logits: torch.Tensor) -> torch.Tensor:
        """(P, len(positions), vocab) logits -> (P, vocab) log-probs at each last position."""
        rows = torch.arange(logits.shape[0], device=logits.device)
        return logits[rows, self.last_index.to(logits.device)].float().log_softmax(-1)

    def edit(self, mask: torch.Tensor) -> torch.Tensor:
        """(n_active,) mask -> the (P, T, d_model) edit sum_i m_i delta_i d_i."""
        return self.delta @ (mask.to(self.W_dec.dtype)[:, None] * self.W_dec)

    def edit_norm(self, mask: torch.Tensor) -> float:
        """Mean L2 norm of the edit over the prompts' real positions."""
        with torch.no_grad():
            norms = self.edit(mask.to(self.W_dec.device)).norm(dim=-1)
        return float(norms[self.real].sum() / self.n_positions)

    def _logp(self, masks: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """(n_masks, n_active) -> last-position log-probs (n_masks, P, vocab)."""
        n, P = masks.shape[0], self.batch.n_prompts
        edits = torch.cat([self.edit(m) for m in masks])  # (n * P, T, d_model)
        return self._run(slice(0, P), n, edits, grad).reshape(n, P, -1)

    def _outcome(self, logp: torch.Tensor) -> Outcome:
        kl = kl_divergence(logp, self.logp_cf[None]).mean(-1)
        if self.batch.answer is None:
            return Outcome(kl, None)
        rows = torch.arange(self.batch.n_prompts)
        diff = logp[:, rows, self.batch.answer] - logp[:, rows, self.batch.distractor]
        return Outcome(kl, diff.mean(-1))

    def evaluate(self, masks: torch.Tensor) -> Outcome:
        """Exact metrics for each mask (n_masks, n_active), batched so that no pass holds
        more than max_batch sequences."""
        per_pass = max(1, self.max_batch // self.batch.n_prompts)
        outcomes = []
        with torch.inference_mode():
            for s in range(0, len(masks), per_pass):
                outcomes.append(self._outcome(self._logp(masks[s:s + per_pass].to(self.W_dec.device))))
        ld = None if outcomes[0].logit_diff is None else torch.cat([o.logit_diff for o in outcomes])
        return Outcome(torch.cat([o.kl for o in outcomes]).cpu(), None if ld is None else ld.cpu())

    def objective(self, outcome: Outcome, metric: str) -> torch.Tensor:
        """What selection minimises: the KL to the counterfactual, or how far the logit
        difference still is above the counterfactual's."""
        if metric == "kl":
            return outcome.kl
        return outcome.logit_diff - self.cf_logit_diff

    @property
    def cf_logit_diff(self) -> float:
        rows = torch.arange(self.batch.n_prompts)
        return float((self.logp_cf[rows, self.batch.answer]
                      - self.logp_cf[rows, self.batch.distractor]).mean())

    def gradient(self, mask: torch.Tensor, metric: str) -> torch.Tensor:
        """d objective / d mask at `mask` (n_active,): attribution patching's
        gradient x (c_cf - c_clean), summed over positions, in one forward and backward."""
        m = mask.to(self.W_dec.device, self.W_dec.dtype).clone().requires_grad_(True)
        chunks = []
        P = self.batch.n_prompts
        for s in range(0, P, max(1, self.max_batch)):  # a pass holds at most max_batch prompts
            sub = _Slice(self, s, min(P, s + self.max_batch))
            logp = sub.logp(m)
            value = sub.objective_sum(logp, metric) / P
            chunks.append(torch.autograd.grad(value, m)[0])
        return torch.stack(chunks).sum(0).detach().cpu()


class _Slice:
    """Prompts s:e of a Patcher, for a gradient pass that keeps the mask in the graph."""

    def __init__(self, p: Patcher, s: int, e: int):
        self.p, self.s, self.e = p, s, e

    def logp(self, m: torch.Tensor) -> torch.Tensor:
        p, s, e = self.p, self.s, self.e
        return p._run(slice(s, e), 1, p.delta[s:e] @ (m[:, None] * p.W_dec), grad=True)

    def objective_sum(self, logp: torch.Tensor, metric: str) -> torch.Tensor:
        p, s, e = self.p, self.s, self.e
        if metric == "kl":
            return kl_divergence(logp, p.logp_cf[s:e]).sum()
        rows = torch.arange(e - s)
        return (logp[rows, p.batch.answer[s:e]] - logp[rows, p.batch.distractor[s:e]]).sum()
