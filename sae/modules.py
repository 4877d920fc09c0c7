"""The three trainable sparse autoencoders, in the units the trainer feeds them.

- tied (Cunningham et al. 2023, sec. 2): f = ReLU(W (x - b_dec) + b_enc) with unit-norm
  rows of W, x_hat = W^T f + b_dec; loss = reconstruction + l1 * mean L1.
- relu: the same, untied; decoder rows are projected back to unit norm after every
  step, so the L1 penalty cannot be dodged by shrinking f and growing the decoder.
- topk (Gao et al. 2024): keep the k largest pre-activations, no sparsity penalty;
  an auxiliary loss (AuxK, sec. A.2) lets dead latents model the residual error.

The trainer works on x / scale (see train.py); `to_dictionary` folds the scale back
so the saved dictionary takes and returns activations in their original units.
"""

from __future__ import annotations

import torch
from torch import nn

from autointerp.dictionaries.dictionary import Dictionary

ARCHES = ("tied", "relu", "topk")


class SparseAutoencoder(nn.Module):
    def __init__(self, arch: str, d_model: int, n_features: int, k: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.arch, self.k = arch, k
        w = torch.randn(n_features, d_model, generator=generator)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_enc = nn.Parameter(w)  # (n_features, d_model)
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.b_dec = nn.Parameter(torch.zeros(d_model))
        # Untied decoders start as the encoder's transpose (Gao et al. 2024, sec. 2.4).
        self.W_dec = None if arch == "tied" else nn.Parameter(w.clone())  # (n_features, d_model)

    @property
    def decoder(self) -> torch.Tensor:
        return self.W_enc if self.W_dec is None else self.W_dec

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        # (x - b_dec) @ W.T + b_enc, with b_dec folded into the bias: then x needs no
        # gradient and backward skips a (batch, n_features) x (n_features, d_model) product.
        bias = self.b_enc - self.W_enc @ self.b_dec  # (n_features,)
        return torch.addmm(bias, x, self.W_enc.T)  # (batch, n_features)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if self.arch != "topk":
            return pre.relu()
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_dec, f, self.decoder)  # (batch, d_model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pre = self.pre_acts(x)
        f = self.activate(pre)
        return self.decode(f), f, pre

    def aux_loss(self, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor,
                 dead: torch.Tensor, var_sum: torch.Tensor | None = None) -> torch.Tensor:
        """AuxK: the top k_aux dead latents reconstruct the error x - x_hat, normalised by
        the batch's variance (Gao et al. 2024, A.2; k_aux = d_model / 2). `var_sum`, the sum
        of squared deviations from the batch mean, is given when x is one rank's slice of a
        global batch (sae/ddp.py), so that every rank divides by the global batch's."""
        n_dead = int(dead.sum())
        if n_dead == 0:
            return x.new_zeros(())
        k_aux = min(x.shape[1] // 2, n_dead)
        masked = pre.masked_fill(~dead, float("-inf"))
        vals, idx = masked.topk(k_aux, dim=-1, sorted=False)
        f_aux = torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        err = (x - x_hat).detach()
        err_hat = f_aux @ self.decoder
        if var_sum is None:
            var_sum = (x - x.mean(0)).pow(2).sum()
        return (err_hat - err).pow(2).sum() / var_sum.clamp(min=1e-12)

    @torch.no_grad()
    def unit_norm_(self) -> None:
        """Project the constrained weights (decoder rows; tied: the shared W) to unit norm."""
        w = self.decoder
        w.div_(w.norm(dim=1, keepdim=True).clamp(min=1e-8))

    @torch.no_grad()
    def remove_parallel_grads_(self) -> None:
        """Drop the gradient component along each unit-norm row: that part would only
        change the norm, which unit_norm_ undoes, and it skews Adam's moments."""
        w = self.decoder
        if w.grad is not None:
            w.grad.sub_((w.grad * w).sum(1, keepdim=True) * w)

    @torch.no_grad()
    def to_dictionary(self, scale: float, meta: dict) -> Dictionary:
        """Fold the input scale s back in: (x/s - b) @ W.T == (x - s b) @ (W/s).T, and the
        decoder output is multiplied by s, so feature values are unchanged."""
        return Dictionary(
            self.W_enc.float().cpu() / scale, self.b_enc.float().cpu(),
            self.decoder.float().cpu() * scale, self.b_dec.float().cpu() * scale,
            "topk" if self.arch == "topk" else "relu", self.k, None, meta)
