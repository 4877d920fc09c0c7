"""The one dictionary format: exact round trips, foreign SAE folders, clear errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from autointerp.dictionaries.dictionary import Dictionary, check_compatible
from autointerp.dictionaries.evaluate import evaluate
from autointerp.dictionaries.sources import dictionary_id, load_dictionary
from autointerp.errors import BadInputError
from autointerp.harvest.store import ActivationStore
from tests.support.cli import run_main
from tests.support.data import make_store

D, F = 24, 40


def random_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(F, D, generator=g), "b_enc": torch.randn(F, generator=g) * 0.1,
            "W_dec": torch.randn(F, D, generator=g), "b_dec": torch.randn(D, generator=g),
            "threshold": torch.rand(F, generator=g)}


def inputs(n: int = 50, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize("activation,k", [("relu", None), ("topk", 5), ("jumprelu", None)])
def test_save_load_round_trip_is_exact(tmp_path, activation, k):
    w = random_weights()
    d = Dictionary(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], activation, k,
                   w["threshold"] if activation == "jumprelu" else None,
                   {"method": "relu", "model": "m", "hyperparameters": {"l1": 0.3}})
    d.save(tmp_path / "d")
    back = load_dictionary(tmp_path / "d")
    for name, t in d.tensors().items():
        assert torch.equal(back.tensors()[name], t), name
    assert (back.activation, back.k, back.meta) == (activation, k, d.meta)
    x = inputs()
    assert torch.equal(back.encode(x), d.encode(x))
    f = d.encode(x)
    assert (f >= 0).all() and f.dtype == torch.float32 and f.shape == (50, F)
    if activation == "topk":
        assert ((f > 0).sum(1) <= k).all()
    digest = hashlib.sha256((tmp_path / "d" / "dictionary.safetensors").read_bytes()).hexdigest()
    assert dictionary_id(tmp_path / "d") == digest
    assert not [p.name for p in (tmp_path / "d").iterdir() if ".tmp" in p.name]
    # what scoring reads before (or instead of) the weights says the same
    from autointerp.dictionaries.sources import read_header

    header = read_header(tmp_path / "d")
    assert (header.d_model, header.n_features, header.meta) == (D, F, back.meta)


def reference_encode(x, W_enc_dF, b_enc, b_dec, apply_b_dec=True):
    return ((x - b_dec) if apply_b_dec else x) @ W_enc_dF + b_enc  # sae-lens convention


@pytest.mark.parametrize("arch,apply_b_dec", [("standard", True), ("standard", False),
                                              ("jumprelu", True), ("topk", True)])
def test_saelens_folder_encodes_like_its_weights(tmp_path, arch, apply_b_dec):
    w = random_weights(2)
    W_enc = w["W_enc"].T.contiguous()  # sae-lens stores (d_in, d_sae)
    tensors = {"W_enc": W_enc, "b_enc": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    cfg = {"architecture": arch, "d_in": D, "d_sae": F, "apply_b_dec_to_input": apply_b_dec,
           "normalize_activations": "none", "metadata": {"model_name": "gpt2", "hook_name": "blocks.3.hook_resid_post"}}
    if arch == "jumprelu":
        tensors["threshold"] = w["threshold"]
    if arch == "topk":
        cfg["k"] = 7
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    d = load_dictionary(tmp_path)
    x = inputs()
    pre = reference_encode(x, W_enc, w["b_enc"], w["b_dec"], apply_b_dec)
    if arch == "standard":
        want = pre.relu()
    elif arch == "jumprelu":
        want = pre.relu() * (pre > w["threshold"])
    else:
        top = pre.topk(7, dim=-1)
        want = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    torch.testing.assert_close(d.encode(x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d.decode(want), want @ w["W_dec"] + w["b_dec"], rtol=1e-5, atol=1e-5)
    assert (d.meta["method"], d.meta["model"], d.meta["layer"]) == ("saelens", "gpt2", 3)


def test_sparsify_folder_encodes_like_its_weights(tmp_path):
    w = random_weights(3)
    folder = tmp_path / "layers.6"
    folder.mkdir()
    save_file({"encoder.weight": w["W_enc"], "encoder.bias": w["b_enc"], "W_dec": w["W_dec"],
               "b_dec": w["b_dec"]}, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"expansion_factor": 2, "normalize_decoder": True,
                                                 "num_latents": F, "k": 6, "multi_topk": False,
                                                 "skip_connection": False, "d_in": D}))
    d = load_dictionary(folder)
    x = inputs()
    # sparsify: ReLU(encoder(x - b_dec)), keep the top k, decode top_acts @ W_dec + b_dec
    pre = torch.nn.functional.linear(x - w["b_dec"], w["W_enc"], w["b_enc"]).relu()
    top = pre.topk(6, dim=-1)
    want = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    torch.testing.assert_close(d.encode(x), want, rtol=1e-5, atol=1e-5)
    recon = (top.values.unsqueeze(-1) * w["W_dec"][top.indices]).sum(1) + w["b_dec"]
    torch.testing.assert_close(d.decode(d.encode(x)), recon, rtol=1e-4, atol=1e-4)
    # the hookpoint folder name, translated into ours (the block's output)
    assert (d.meta["method"], d.meta["hook"], d.k) == ("sparsify", "resid.6", 6)
    assert d.meta["hook_source_name"] == "layers.6"


def saved(tmp_path) -> Dictionary:
    w = random_weights()
    d = Dictionary(w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"], meta={"method": "relu"})
    d.save(tmp_path / "d")
    return d


def test_missing_weights_is_one_line_error_naming_the_file(tmp_path):
    saved(tmp_path)
    (tmp_path / "d" / "dictionary.safetensors").unlink()
    with pytest.raises(BadInputError, match=r"dictionary\.safetensors are missing") as e:
        load_dictionary(tmp_path / "d")
    assert "\n" not in str(e.value)
    with pytest.raises(BadInputError, match="no dictionary in"):
        load_dictionary(tmp_path)


def test_truncated_weights_are_one_line_error_naming_the_file(tmp_path):
    saved(tmp_path)
    path = tmp_path / "d" / "dictionary.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(BadInputError, match=r"dictionary\.safetensors are truncated or corrupt") as e:
        load_dictionary(tmp_path / "d")
    assert "\n" not in str(e.value)
    (tmp_path / "d" / "config.json").write_text("{not json")
    with pytest.raises(BadInputError, match=r"config\.json is not valid JSON"):
        load_dictionary(tmp_path / "d")


def small_store(tmp_path, d_model=D, meta=None, nan=False):
    g = torch.Generator().manual_seed(0)
    train = torch.randn(2048, d_model, generator=g)
    ev = torch.randn(64 * 8, d_model, generator=g)
    if nan:
        ev[100, 3] = float("nan")
    return make_store(tmp_path / "store", train, ev, np.zeros(len(ev), np.int32), meta=meta)


def test_width_mismatch_and_provenance_mismatch(tmp_path):
    d = saved(tmp_path)
    wide = ActivationStore(small_store(tmp_path, d_model=32))
    with pytest.raises(BadInputError, match="dictionary width 24 does not match the activations' d_model 32"):
        check_compatible(d, wide)
    store = ActivationStore(small_store(tmp_path / "b"))
    d.meta.update(store_model_hash="a" * 64, model="m1", hook="resid.0")
    with pytest.raises(BadInputError, match="fit on activations of model m1"):
        check_compatible(d, store)
    d.meta.update(store_model_hash="0" * 64, hook="resid.5")
    with pytest.raises(BadInputError, match="fit at hook resid.5"):
        check_compatible(d, store)
    d.meta["hook"] = "resid.0"
    check_compatible(d, store)
    metrics = evaluate(d, store)
    assert metrics.n_tokens == 512 and metrics.fvu > 0


def test_nan_activations_are_refused(tmp_path):
    d = saved(tmp_path)
    store = ActivationStore(small_store(tmp_path, nan=True))
    with pytest.raises(BadInputError, match="NaN or inf"):
        evaluate(d, store)


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    store = small_store(tmp_path)
    code, _, err = run_main(["train", "--acts", store, "--arch", "gated", "--out", tmp_path / "o"],
                           capsys, monkeypatch)
    assert code == 2
    assert err.strip() == ("error: Invalid value for '--arch': 'gated' is not one of 'tied', "
                           "'relu', 'topk'.")
    wide = small_store(tmp_path / "w", d_model=32)
    saved(tmp_path)
    code, _, err = run_main(["inspect", tmp_path / "d", "--acts", wide], capsys, monkeypatch)
    assert code == 1
    assert err.strip() == "error: dictionary width 24 does not match the activations' d_model 32"


def test_loss_recovered_with_a_real_tiny_model(tmp_path, tiny_llama_dir, capsys, monkeypatch):
    from autointerp.baselines.directions import fit_baseline
    from autointerp.dictionaries.evaluate import load_store_model, loss_recovered
    from autointerp.dictionaries.outputs import meta_from_store

    words = "the cat sat on a mat while sparse features fire and neurons rest".split()
    rng = np.random.default_rng(0)
    paragraphs = [" ".join(rng.choice(words, 120)) for _ in range(60)]
    (tmp_path / "corpus.txt").write_text("\n\n".join(paragraphs))
    code, _, err = run_main(["harvest", "--layer", 0, "--model", tiny_llama_dir, "--corpus",
                            tmp_path / "corpus.txt", "--tokens", 6000, "--eval-fraction", 0.5,
                            "--device", "cpu", "--out", tmp_path / "store"], capsys, monkeypatch)
    assert code == 0, err
    store = ActivationStore(tmp_path / "store")
    loaded = load_store_model(store, "cpu")
    pca = fit_baseline("pca", store.train_sample(4000), meta=meta_from_store(store))
    exact = loss_recovered(pca, store, loaded, n_fragments=8)
    assert exact.n_tokens == 8 * 63  # predictions made at stored positions, none from BOS
    # (a random model: zeroing its layer may even help, but it must change the loss)
    assert abs(exact.ce_zero_ablation - exact.ce_clean) > 0.5
    assert abs(exact.loss_recovered - 1) < 1e-3  # a complete basis reconstructs exactly
    mean_only = Dictionary(torch.zeros_like(pca.W_enc), pca.b_enc, torch.zeros_like(pca.W_dec),
                           pca.b_dec, meta=pca.meta)
    assert abs(loss_recovered(mean_only, store, loaded, n_fragments=8).loss_recovered - 1) > 0.05
    pca.save(tmp_path / "pca")
    code, out, err = run_main(["inspect", tmp_path / "pca", "--acts", tmp_path / "store",
                              "--loss-recovered", "--device", "cpu"], capsys, monkeypatch)
    assert code == 0, err
    assert "loss_recovered (measured)" in out
