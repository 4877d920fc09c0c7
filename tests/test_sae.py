"""SAE training: planted features recovered with default settings, exact scale folding,
checkpoints that resume to the same weights, clear config errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from autointerp.baselines.directions import fit_baseline
from autointerp.dictionaries.sources import load_dictionary
from autointerp.errors import BadInputError
from autointerp.sae.config import TrainConfig
from autointerp.sae.modules import SparseAutoencoder
from autointerp.sae.toy import mmcs, planted_features
from autointerp.sae.train import train_sae
from tests.support.cli import run_main
from tests.support.data import make_store

# Sharkey et al.'s setting, as in the issue: 512 unit directions in 128 dimensions, each on
# with p = 1%, magnitude U[0, 1]. Batches of 1024 keep the run short; everything else
# (L1 coefficient, k, learning rate, schedules) is the default.
TOY_TOKENS, TOY_BATCH, RATIO = 100_352, 1024, 4


@pytest.fixture(scope="module")
def toy():
    return planted_features(n_true=512, d_model=128, p_active=0.01, seed=0)


@pytest.fixture
def one_thread():
    """Tiny matrix products run fastest on one thread of a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("arch", ["tied", "relu"])
def test_l1_saes_recover_planted_features_with_defaults(toy, arch, one_thread):
    cfg = TrainConfig(arch=arch, n_features=RATIO * 128, n_tokens=TOY_TOKENS, batch_size=TOY_BATCH)
    d, stats = train_sae(toy.batches(TOY_BATCH, cfg.n_steps), 128, cfg, progress=False)
    score = mmcs(toy.directions, d.W_dec)
    assert score >= 0.9, (arch, score, stats)
    assert stats["dead"] < 0.05


def test_topk_recovers_planted_features_through_a_store_and_the_cli(toy, tmp_path, one_thread,
                                                                   capsys, monkeypatch):
    train = toy.sample(TOY_TOKENS, torch.Generator().manual_seed(5))
    ev = toy.sample(64 * 64, torch.Generator().manual_seed(6))
    store = make_store(tmp_path / "store", train, ev, np.zeros(len(ev), np.int32), shard_tokens=65536)
    out = tmp_path / "topk"
    args = ["train", "--acts", store, "--arch", "topk", "--ratio", RATIO, "--tokens", TOY_TOKENS,
            "--batch-size", TOY_BATCH, "--out", out]
    code, _, err = run_main(args, capsys, monkeypatch)
    assert code == 0, err
    d = load_dictionary(out)
    assert mmcs(toy.directions, d.W_dec) >= 0.9
    metrics = json.loads((out / "config.json").read_text())["meta"]["metrics"]
    assert metrics["fvu"] < 0.3 and 5 < metrics["l0"] <= 32, metrics
    assert d.meta["hyperparameters"]["k"] == 32 and d.meta["method"] == "topk"
    code, out_text, _ = run_main(args, capsys, monkeypatch)  # again: finds the finished one
    assert code == 0 and "nothing to do" in out_text


def test_pca_fails_on_planted_features(toy):
    x = toy.sample(20_000, torch.Generator().manual_seed(3))
    d = fit_baseline("pca", x)
    assert mmcs(toy.directions, d.W_dec) < 0.5


def test_scale_folding_keeps_features_and_original_units():
    g = torch.Generator().manual_seed(0)
    sae = SparseAutoencoder("relu", 16, 48, generator=g)
    with torch.no_grad():
        sae.b_enc.normal_(generator=g)
        sae.b_dec.normal_(generator=g)
    scale = 37.5
    d = sae.to_dictionary(scale, {})
    x = torch.randn(64, 16, generator=g) * scale
    with torch.no_grad():
        x_hat, f, _ = sae(x / scale)
    torch.testing.assert_close(d.encode(x), f, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d.decode(f), x_hat * scale, rtol=1e-5, atol=1e-4)


class Interrupted(Exception):
    pass


def batches(n: int, crash_after: int | None = None):
    g = torch.Generator().manual_seed(9)
    for i in range(n):
        if crash_after is not None and i == crash_after:
            raise Interrupted
        yield torch.randn(64, 16, generator=g).relu()


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_checkpoint_resume_matches_an_uninterrupted_run(tmp_path, arch, one_thread):
    cfg = TrainConfig(arch=arch, n_features=32, n_tokens=64 * 30, batch_size=64,
                      checkpoint_every=10, k=4 if arch == "topk" else None, dead_tokens=64 * 3)
    whole, _ = train_sae(batches(30), 16, cfg, progress=False)
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupted):
        train_sae(batches(30, crash_after=25), 16, cfg, ckpt, progress=False)
    assert torch.load(ckpt, weights_only=True)["step"] == 20
    resumed, _ = train_sae(batches(30), 16, cfg, ckpt, progress=False)
    for name, t in whole.tensors().items():
        assert torch.equal(resumed.tensors()[name], t), name
    other = TrainConfig(arch=arch, n_features=32, n_tokens=64 * 30, batch_size=64, seed=1,
                        checkpoint_every=10, k=4 if arch == "topk" else None, dead_tokens=64 * 3)
    with pytest.raises(BadInputError, match="other settings"):
        train_sae(batches(30), 16, other, ckpt, progress=False)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(BadInputError, match="unknown --arch 'gated'"):
        TrainConfig(arch="gated", n_features=8, n_tokens=4096)
    with pytest.raises(BadInputError, match="--l1 applies to tied and relu"):
        TrainConfig(arch="topk", n_features=8, n_tokens=4096, l1=0.1)
    with pytest.raises(BadInputError, match="at least one batch"):
        TrainConfig(arch="relu", n_features=8, n_tokens=100)
    cfg = TrainConfig(arch="relu", n_features=8, n_tokens=4096, batch_size=64)
    bad = [torch.full((64, 16), float("inf"))]
    with pytest.raises(BadInputError, match="NaN or inf"):
        train_sae(iter(bad), 16, cfg, progress=False)
    with pytest.raises(BadInputError, match="ran out after 1 of 64 steps"):
        train_sae(iter([torch.ones(64, 16)]), 16, cfg, progress=False)


def test_dead_latents_get_the_auxk_gradient():
    g = torch.Generator().manual_seed(0)
    sae = SparseAutoencoder("topk", 16, 32, k=2, generator=g)
    x = torch.randn(128, 16, generator=g)
    x_hat, _, pre = sae(x)
    dead = torch.zeros(32, dtype=torch.bool)
    dead[:5] = True
    sae.aux_loss(x, x_hat, pre, dead).backward()
    grad_rows = sae.W_dec.grad.abs().sum(1) > 0
    assert grad_rows[:5].any() and not grad_rows[5:].any()
    assert sae.aux_loss(x, x_hat, pre, torch.zeros(32, dtype=torch.bool)) == 0
