"""Baselines: PCA equals numpy's SVD, every basis reconstructs exactly, both tails kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from autointerp.baselines.directions import fit_baseline, pca_directions
from autointerp.errors import BadInputError
from tests.support.cli import run_main
from tests.support.data import make_store


def correlated(n: int = 3000, d: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) * torch.logspace(0, -2, d).unsqueeze(1)
    # Uniform (non-Gaussian) sources, so FastICA has something to find and converges fast.
    return (torch.rand(n, d, generator=g) * 2 - 1) @ mix + 3.0


def test_pca_agrees_with_numpy_svd():
    x = correlated()
    comps, variances, mean = pca_directions(x)
    centred = x.double().numpy() - x.double().numpy().mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(variances.numpy(), s**2 / (len(x) - 1), rtol=1e-9)
    signs = np.sign((comps.numpy() * vt).sum(1))  # SVD's sign of each component is arbitrary
    np.testing.assert_allclose(comps.numpy(), vt * signs[:, None], atol=1e-9)
    d = fit_baseline("pca", x)
    proj = d.encode(x)[:, 0::2] - d.encode(x)[:, 1::2]  # feature pairs give back each projection
    np.testing.assert_allclose(proj.double().numpy(), centred @ (vt * signs[:, None]).T,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["pca", "ica", "neurons", "random"])
def test_every_baseline_is_a_complete_split_basis(method):
    x = correlated(n=2000, d=12, seed=1)
    d = fit_baseline(method, x, seed=3, meta={"model": "m"})
    f = d.encode(x)
    assert d.n_features == 24 and (f >= 0).all()
    assert ((f[:, 0::2] > 0) & (f[:, 1::2] > 0)).sum() == 0  # a pair never fires together
    torch.testing.assert_close(d.decode(f), x, rtol=1e-3, atol=1e-3)
    assert d.meta["method"] == method and d.meta["model"] == "m"


def test_neurons_and_random_directions():
    x = correlated(n=500, d=8)
    f = fit_baseline("neurons", x).encode(x)
    centred = x - x.mean(0)
    torch.testing.assert_close(f[:, 0::2], centred.relu(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f[:, 1::2], (-centred).relu(), rtol=1e-5, atol=1e-5)
    a, b, c = (fit_baseline("random", x, seed=s).W_enc for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(16))


@pytest.mark.parametrize("flip", [1.0, -1.0])
def test_ica_keeps_a_component_whose_heavy_tail_is_negative(flip):
    """A source with a heavy negative tail: some feature must track that tail, whichever
    sign FastICA happens to give the component (ranking only ReLU(+proj) loses it half
    of the time, as the paper's released code did)."""
    g = torch.Generator().manual_seed(0)
    n = 4000
    tail = -torch.empty(n).exponential_(generator=g)  # heavy tail below zero
    others = torch.rand(n, 5, generator=g) * 2 - 1
    sources = torch.cat([tail.unsqueeze(1), others], 1)
    x = flip * sources @ torch.randn(6, 6, generator=g)
    f = fit_baseline("ica", x, seed=0).encode(x)
    target = (tail - tail.median()).clamp(max=0).neg()  # how far into the tail each sample is
    corr = [np.corrcoef(f[:, j].numpy(), target.numpy())[0, 1] for j in range(f.shape[1])]
    assert max(corr) > 0.95


def test_bad_inputs():
    with pytest.raises(BadInputError, match="unknown --method 'nmf'"):
        fit_baseline("nmf", correlated())
    x = correlated()
    x[5, 2] = float("nan")
    with pytest.raises(BadInputError, match="NaN or inf"):
        fit_baseline("pca", x)


def test_baseline_cli_saves_evaluated_dictionary(tmp_path, capsys, monkeypatch):
    x = correlated(n=4096 + 64 * 16, d=16)
    store = make_store(tmp_path / "store", x[:4096], x[4096:], np.zeros(64 * 16, np.int32))
    out = tmp_path / "pca"
    code, _, err = run_main(["baseline", "--acts", store, "--method", "pca", "--out", out,
                            "--n-fit", 3000], capsys, monkeypatch)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    meta = config["meta"]
    assert meta["metrics"]["fvu"] < 1e-3 and meta["metrics"]["n_tokens"] == 64 * 16
    assert meta["store"] == str(store.resolve()) and meta["hook"] == "resid.0"
    assert meta["hyperparameters"] == {"seed": 0, "n_fit": 3000}
    code, out_text, err = run_main(["inspect", out, "--acts", store], capsys, monkeypatch)
    assert code == 0, err
    assert "fvu (measured)" in out_text and "pca" in out_text
    code, _, err = run_main(["baseline", "--acts", store, "--method", "ica", "--out", out],
                           capsys, monkeypatch)
    assert code == 1 and "already holds a dictionary made with other settings" in err
