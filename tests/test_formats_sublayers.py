"""Dictionaries that read inside a block's sublayers, end to end: folders written by the real
sae-lens (an attention-z SAE, a transcoder on the normalised MLP input) and the real sparsify
(a `layers.L.mlp` transcoder), sized for the tiny GPT-2 of tests/fixtures/transformerlens, load,
harvest their own hook through `score --model` without --layer, and encode the activations our
hooks read like the library encodes TransformerLens's own cache of them
(tests/fixtures/peers/make_fixtures.py). Also: how sae-lens configs name these hooks
(hf_hook_name agreement, TransformerLens processing flags) and Gemma Scope's Hub paths."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from autointerp.dictionaries.saelens import saelens_meta
from autointerp.dictionaries.sources import load_dictionary
from autointerp.errors import BadInputError
from autointerp.harvest.hooks import capture
from autointerp.harvest.models import load_causal_lm, parse_hook
from autointerp.harvest.store import ActivationStore
from tests.support.cli import run_cli
from tests.support.data import gemma_encode, gemma_npz
from tests.support.models import corpus_text, single_torch_thread

one_torch_thread = pytest.fixture(autouse=True)(single_torch_thread)
PEERS = Path(__file__).parent / "fixtures" / "peers"
GPT2 = Path(__file__).parent / "fixtures" / "transformerlens" / "gpt2"
# folder -> the hook it declares, in our vocabulary
MODEL_SIZED = {"saelens_gpt2_hook_z": "attn_z.1", "saelens_gpt2_transcoder_ln2": "mlp_normalized.1",
               "sparsify_gpt2/layers.1.mlp": "mlp_in.1"}
# A cross-layer transcoder: one encoder per layer, each scored as its own dictionary.
CLT = {"clt_gpt2/W_enc_0.safetensors": "mlp_normalized.0",
       "clt_gpt2/W_enc_1.safetensors": "mlp_normalized.1"}
LEXICAL = ["--explainer", "lexical", "--scoring-backend", "lexical", "--no-selftest", "--n-sampled", "2"]


def io_of(spec: str) -> dict:
    if spec.startswith("clt_"):  # io_L.safetensors beside W_enc_L.safetensors
        layer = spec.rsplit("_", 1)[1].split(".")[0]
        return load_file(str(PEERS / "clt_gpt2" / f"io_{layer}.safetensors"))
    return load_file(str(PEERS / spec / "io.safetensors"))


@pytest.mark.parametrize("folder", sorted(MODEL_SIZED) + sorted(CLT))
def test_our_hook_encodes_like_the_library_on_transformerlens_activations(folder):
    lm = load_causal_lm(str(GPT2), device="cpu", dtype="float32")
    d = load_dictionary(PEERS / folder)
    io = io_of(folder)
    assert d.meta["hook"] == {**MODEL_SIZED, **CLT}[folder] and d.meta["model"] in ("gpt2", None)
    hook = parse_hook(d.meta["hook"], lm.n_layers)
    x = capture(lm, hook, io["tokens"].long(), input_transform=d.meta["input_transform"])
    x = x.reshape(-1, d.d_model)
    spread = (io["x"].max() - io["x"].min()).item()
    assert (x - io["x"]).abs().max().item() <= 1e-4 * spread  # measured 9.5e-7 at most
    want = io["feature_acts"]
    assert 0 < int((want > 0).sum()) < want.numel()
    torch.testing.assert_close(d.encode(x), want, rtol=1e-4, atol=1e-4 * want.max().item())


def test_score_model_harvests_each_dictionarys_own_sublayer_hook(tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": p}) for p in
                                corpus_text(0, n_paragraphs=120).split("\n\n")) + "\n")
    db = tmp_path / "db.sqlite"
    dicts = [arg for f in [*sorted(MODEL_SIZED), "clt_gpt2"] for arg in ("--dict", PEERS / f)]
    result = run_cli(["score", *dicts, "--model", GPT2, "--corpus", corpus, "--tokens", 12000,
                      "--dtype", "float32", "--db", db, *LEXICAL], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT r.config, r.n_sampled, d.hook FROM runs r "
                           "JOIN dictionaries d ON d.id = r.dictionary_id").fetchall()
    found = {Path(json.loads(c)["dictionary_path"]).relative_to(PEERS).as_posix(): (n, h, c)
             for c, n, h in rows}
    expected = {**MODEL_SIZED, **CLT}
    assert set(found) == set(expected)  # the CLT root scored layer by layer
    for folder, (n_sampled, hook, config) in found.items():
        meta = ActivationStore(tmp_path / json.loads(config)["store_path"]).meta
        assert (hook, meta["hook"], meta["d_model"], meta["dtype"]) == (
            expected[folder], expected[folder], 32, "float32")
        assert meta["hook_read"].startswith("input of transformer.h.")
        assert n_sampled >= 1


def test_a_clt_root_names_its_layers():
    from autointerp.dictionaries.sources import dictionary_specs

    assert [Path(s).name for s in dictionary_specs(PEERS / "clt_gpt2")] == [
        "W_enc_0.safetensors", "W_enc_1.safetensors"]
    with pytest.raises(BadInputError, match="cross-layer transcoder with one encoder per layer"):
        load_dictionary(PEERS / "clt_gpt2")
    d = load_dictionary(PEERS / "clt_gpt2" / "W_enc_1.safetensors")
    assert d.encode_only and d.meta["hook_out_source_name"] == "hook_mlp_out"


def _cfg(hook_name: str, model: str = "gpt2", **md) -> dict:
    return {"architecture": "standard", "d_in": 8, "d_sae": 16,
            "metadata": {"model_name": model, "hook_name": hook_name, **md}}


@pytest.mark.parametrize("hook_name, md, hook, transform", [
    ("blocks.2.attn.hook_z", {}, "attn_z.2", "fold_value_biases"),  # old: from_pretrained
    ("blocks.2.attn.hook_z", {"model_from_pretrained_kwargs": {}}, "attn_z.2", None),
    ("blocks.2.mlp.hook_in", {"model_from_pretrained_kwargs": {"fold_ln": False}}, "mlp_in.2", None),
    ("blocks.2.mlp.hook_in", {"model_from_pretrained_kwargs": {"fold_ln": True}},
     "mlp_normalized.2", None),  # with fold_ln the MLP receives the normalised vector
    ("blocks.2.ln2.hook_normalized", {}, "mlp_normalized.2", None),
    ("hook_embed", {"model_from_pretrained_kwargs": {"center_writing_weights": True}},
     "token_embed", "center"),
])
def test_saelens_hooks_and_transformerlens_processing(hook_name, md, hook, transform):
    meta = saelens_meta(_cfg(hook_name, **md), "standard", "test")
    assert (meta["hook"], meta["input_transform"]) == (hook, transform)


@pytest.mark.parametrize("hook_name, hf, expected", [
    # Gemma Scope 2 transcoders: TransformerLens's pre-norm hook_mlp_in beside the module that
    # was read; both are the MLP's input of layer 5, and the module decides.
    ("blocks.5.hook_mlp_in", "model.layers.5.pre_feedforward_layernorm.output", "mlp_in.5"),
    ("blocks.5.attn.hook_z", "model.layers.5.self_attn.o_proj.input", "attn_z.5"),
    ("blocks.5.hook_mlp_out", "model.layers.5.post_feedforward_layernorm.output", "mlp_post.5"),
    ("blocks.5.hook_resid_post", "model.layers.5.output", "resid.5"),
    ("blocks.5.hook_resid_post", "model.layers.5.self_attn.o_proj.input", None),
    ("blocks.5.hook_mlp_in", "model.layers.6.pre_feedforward_layernorm.output", None),
])
def test_hf_hook_name_must_agree_with_hook_name(hook_name, hf, expected):
    cfg = _cfg(hook_name, "google/gemma-3-1b-pt", hf_hook_name=hf)
    if expected is None:
        with pytest.raises(BadInputError, match="name different activations") as e:
            saelens_meta(cfg, "standard", "test")
        assert "\n" not in str(e.value)
    else:
        assert saelens_meta(cfg, "standard", "test")["hook"] == expected


def test_reshape_hook_z_on_another_hook_is_refused():
    with pytest.raises(BadInputError, match="reshape_activations='hook_z'"):
        saelens_meta(_cfg("blocks.1.hook_resid_post", reshape_activations="hook_z"), "standard", "t")


@pytest.mark.parametrize("repo, hook, encode_only", [
    ("gemma-scope-2b-pt-att", "attn_z.3", False), ("gemma-scope-2b-pt-mlp", "mlp_post.3", False),
    ("gemma-scope-2b-pt-transcoders", "mlp_normalized.3", True),
])
def test_gemma_scope_sublayer_paths(tmp_path, repo, hook, encode_only):
    path = tmp_path / repo / "layer_3" / "width_16k" / "average_l0_71" / "params.npz"
    gemma_npz(path)
    d = load_dictionary(path.parent)
    assert (d.meta["hook"], d.encode_only) == (hook, encode_only)


def test_gemma_scope_embedding_reads_the_scaled_token_embedding(tmp_path):
    """Trained before Gemma's sqrt(d_model) scaling: encoding the scaled embedding with W_enc
    divided by that factor gives the published features of the unscaled one."""
    path = tmp_path / "gemma-scope-2b-pt-res" / "embedding" / "width_4k" / "average_l0_6" / "params.npz"
    p = gemma_npz(path)
    d = load_dictionary(path.parent)
    x = np.random.default_rng(1).normal(0.5, 2, (64, 16)).astype(np.float32)
    want = gemma_encode(p, x)
    scaled = torch.from_numpy(x) * 16 ** 0.5
    assert d.meta["hook"] == "token_embed" and 0 < (want > 0).sum() < want.size
    np.testing.assert_allclose(d.encode(scaled).numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("folder, words", [
    ("saelens_gpt2_hook_z", ("attn_z.1 (as written: blocks.1.attn.hook_z)", "output projection",
                             "flattened to n_heads x d_head")),
    ("saelens_gpt2_transcoder_ln2", ("mlp_normalized.1", "before the norm's weight and bias")),
    ("sparsify_gpt2/layers.1.mlp", ("mlp_in.1 (as written: layers.1.mlp)", "after its norm")),
])
def test_inspect_names_the_hook_and_how_it_is_read(folder, words):
    result = run_cli(["inspect", PEERS / folder])
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "read as" in text and all(w in text for w in words), text


def test_an_attn_z_store_has_the_heads_width_and_records_what_was_read(tmp_path):
    """Gemma 2's 4 heads of 16 are 64 wide, not d_model 32; the store says so, and what it read."""
    from autointerp.harvest.run import HarvestConfig, harvest

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": p}) for p in
                                corpus_text(0, n_paragraphs=20).split("\n\n")) + "\n")
    out = harvest(HarvestConfig(
        hook="blocks.1.attn.hook_z", model=str(GPT2.parent / "gemma2"), corpus=str(corpus),
        n_tokens=2000, eval_fraction=0.3, fragment_len=16, batch_size=8, device="cpu",
        dtype="float32", input_transform="fold_value_biases", out=tmp_path / "z"))
    store = ActivationStore(out)
    assert (store.meta["hook"], store.d_model, store.meta["input_transform"]) == (
        "attn_z.1", 64, "fold_value_biases")
    assert store.meta["hook_read"].startswith("input of model.layers.1.self_attn.o_proj")
    assert store.meta["n_train_tokens"] > 0 and store.train_sample(16).shape == (16, 64)


def test_dictionary_learning_folder_by_hf_name(tmp_path, monkeypatch):
    """SAEBench's suites are Hub folders of config.json + ae.pt: `hf:ORG/REPO/PATH` reads one
    from the Hugging Face cache, offline."""
    from tests.support.servers.hub import hub_cache

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = PEERS / "dictlearning_topk"
    path = "pythia70m_sweep_topk_ctx128_0730/resid_post_layer_3/trainer_0"
    hub_cache(cache, "adamkarvonen/saebench-tiny", {f"{path}/{name}": src / name
                                                   for name in ("config.json", "ae.pt")})
    d = load_dictionary(f"hf:adamkarvonen/saebench-tiny/{path}")
    io = load_file(str(src / "io.safetensors"))
    assert (d.meta["hook"], d.meta["source"]) == ("resid.3", f"hf:adamkarvonen/saebench-tiny/{path}")
    torch.testing.assert_close(d.encode(io["x"]), io["feature_acts"], rtol=1e-5, atol=1e-5)
