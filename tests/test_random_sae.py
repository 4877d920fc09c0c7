"""The random SAE floor: the trained SAE's shape, activation, biases and row norms, with
random directions."""

from __future__ import annotations

import torch

from autointerp.baselines.random_sae import METHOD, random_like
from autointerp.dictionaries.dictionary import Dictionary


def trained_like(n: int = 32, d: int = 8) -> Dictionary:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(n, d, generator=g) * torch.linspace(0.5, 2, n)[:, None]
    return Dictionary(W, torch.randn(n, generator=g), W.clone() * 0.3, torch.randn(d, generator=g),
                      "topk", 4, meta={"method": "topk", "hyperparameters": {"k": 4}})


def test_same_shape_norms_and_activation_new_directions(tmp_path):
    sae = trained_like()
    rnd = random_like(sae, seed=1)
    assert rnd.W_enc.shape == sae.W_enc.shape and rnd.activation == "topk" and rnd.k == 4
    assert torch.allclose(rnd.W_enc.norm(dim=1), sae.W_enc.norm(dim=1), rtol=1e-5)
    assert torch.allclose(rnd.W_dec.norm(dim=1), sae.W_dec.norm(dim=1), rtol=1e-5)
    assert torch.equal(rnd.b_enc, sae.b_enc) and torch.equal(rnd.b_dec, sae.b_dec)
    cos = torch.nn.functional.cosine_similarity(rnd.W_enc, sae.W_enc, dim=1)
    assert cos.abs().max() < 0.99  # not the trained directions
    assert rnd.meta["method"] == METHOD and rnd.meta["hyperparameters"]["like"] == "topk"
    f = rnd.encode(torch.randn(5, 8))
    assert (f >= 0).all() and ((f > 0).sum(1) <= 4).all()
    assert torch.equal(random_like(sae, seed=1).W_enc, rnd.W_enc)  # seeded
    rnd.save(tmp_path / "r")
