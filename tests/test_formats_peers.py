"""Folders written by the real sae-lens, sparsify and dictionary_learning (tests/fixtures/peers/make_fixtures.py,
versions in versions.json) load exactly: our encode and reconstruction match the library's
own outputs, saved beside each folder, to 1e-5."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from autointerp.dictionaries.evaluate import evaluate
from autointerp.dictionaries.sources import load_dictionaries, load_dictionary
from autointerp.errors import BadInputError

PEERS = Path(__file__).parent / "fixtures" / "peers"
VERSIONS = json.loads((PEERS / "versions.json").read_text())
# clt_gpt2 holds one dictionary per layer file: tests/test_formats_sublayers.py.
LOADABLE = [f for f in VERSIONS["folders"] if "refuse" not in f and not f.startswith("clt_")]
# folder -> (our hook, architecture, input_transform, encode-only)
EXPECTED = {
    "saelens_standard": ("resid.2", "standard", None, False),
    "saelens_standard_no_bdec": ("mlp.2", "standard", None, False),
    "saelens_standard_embed_centered": ("embed", "standard", "center", False),
    "saelens_standard_layer_norm": ("resid.1", "standard", None, False),
    "saelens_standard_constant_norm_rescale": ("attn.1", "standard", None, False),
    "saelens_topk": ("resid.2", "topk", None, False),
    "saelens_topk_rescale": ("resid_mid.2", "topk", None, False),
    "saelens_jumprelu": ("resid.1", "jumprelu", None, False),
    "saelens_gated": ("resid.7", "gated", None, False),
    "saelens_gated_no_bdec": ("resid.1", "gated", None, False),
    "saelens_transcoder": ("resid_mid.1", "transcoder", None, True),
    "saelens_skip_transcoder": ("resid_mid.1", "skip_transcoder", None, True),
    "saelens_jumprelu_transcoder": ("resid_mid.1", "jumprelu_transcoder", None, True),
    "saelens_jumprelu_skip_transcoder": ("resid_mid.1", "jumprelu_skip_transcoder", None, True),
    "saelens_batchtopk": ("resid.2", "jumprelu", None, False),
    "saelens_matryoshka": ("resid.2", "jumprelu", None, False),
    "sparsify_root/layers.1": ("resid.1", "topk", None, False),
    "sparsify_root/layers.2.mlp": ("mlp.2", "topk", None, False),
    "sparsify_groupmax": None,  # not a hookpoint folder name: checked separately
    "sparsify_transcoder/layers.1": ("resid.0", "transcoder", None, True),
    # A transcoder of the MLP module reads what the MLP receives, after its norm.
    "sparsify_transcoder_mlp/layers.1.mlp": ("mlp_in.1", "transcoder", None, True),
    # Sized for the tiny GPT-2 of tests/fixtures/transformerlens (tests/test_formats_sublayers.py).
    "saelens_gpt2_hook_z": ("attn_z.1", "standard", None, False),
    "saelens_gpt2_transcoder_ln2": ("mlp_normalized.1", "transcoder", None, True),
    "sparsify_gpt2/layers.1.mlp": ("mlp_in.1", "transcoder", None, True),
    # dictionary_learning (SAEBench's format), one folder per trainer it ships.
    **{f"dictlearning_{name}": ("resid.3", trainer, None, False) for name, trainer in (
        ("standard", "StandardTrainer"), ("standard_april", "StandardTrainerAprilUpdate"),
        ("p_anneal", "PAnnealTrainer"), ("gated", "GatedSAETrainer"),
        ("gated_anneal", "GatedAnnealTrainer"), ("topk", "TopKTrainer"),
        ("batch_topk", "BatchTopKTrainer"), ("jumprelu", "JumpReluTrainer"),
        ("matryoshka", "MatryoshkaBatchTopKTrainer"))},
    "sparsify_skip/layers.1": ("resid.1", "topk+skip", None, True),
}


def test_fixtures_were_made_by_the_libraries():
    assert VERSIONS["versions"]["sae-lens"].startswith("6.")
    assert VERSIONS["versions"]["eai-sparsify"] == "1.3.3"
    assert VERSIONS["versions"]["dictionary-learning"] == "0.1.0"
    assert set(EXPECTED) | {"saelens_refuse_expected_average", "clt_gpt2"} == set(VERSIONS["folders"])


@pytest.mark.parametrize("folder", LOADABLE)
def test_encode_matches_the_library(folder):
    io = load_file(str(PEERS / folder / "io.safetensors"))
    if folder == "sparsify_groupmax":  # renamed: no module path, so no declared hook
        d = load_dictionary(PEERS / folder)
        assert (d.meta["hook"], d.meta["layer"], d.meta["hook_source_name"]) == (None,) * 3
        return
    d = load_dictionary(PEERS / folder)
    f = d.encode(io["x"])
    want = io["feature_acts"]
    # A meaningful comparison: the library's features are sparse but not all zero.
    assert 0 < int((want > 0).sum()) < want.numel()
    torch.testing.assert_close(f, want, rtol=1e-5, atol=1e-5)
    hook, arch, transform, encode_only = EXPECTED[folder]
    assert (d.meta["hook"], d.meta["architecture"], d.meta["input_transform"]) == (hook, arch,
                                                                                   transform)
    assert d.encode_only == encode_only
    assert d.meta["source"].startswith(("sae-lens folder", "sparsify folder",
                                        "dictionary_learning folder"))
    if encode_only:
        with pytest.raises(BadInputError, match="encode-only"):
            d.decode(f)
    else:
        torch.testing.assert_close(d.reconstruct(io["x"]), io["recon"], rtol=1e-5, atol=1e-5)


def test_topk_rescale_is_not_the_unscaled_encode():
    """The issue's bug: ignoring rescale_acts_by_decoder_norm gives other activations."""
    folder = PEERS / "saelens_topk_rescale"
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["rescale_acts_by_decoder_norm"] is True
    from autointerp.dictionaries.saelens import from_saelens

    plain = from_saelens({**cfg, "rescale_acts_by_decoder_norm": False},
                         folder / "sae_weights.safetensors")
    io = load_file(str(folder / "io.safetensors"))
    assert (plain.encode(io["x"]) - io["feature_acts"]).abs().max() > 0.1


def test_groupmax_matches_sparsify(tmp_path):
    # sparsify's folder name is the hookpoint: put the groupmax coder under layers.3.
    import shutil

    shutil.copytree(PEERS / "sparsify_groupmax", tmp_path / "layers.3")
    d = load_dictionary(tmp_path / "layers.3")
    io = load_file(str(PEERS / "sparsify_groupmax" / "io.safetensors"))
    torch.testing.assert_close(d.encode(io["x"]), io["feature_acts"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d.reconstruct(io["x"]), io["recon"], rtol=1e-5, atol=1e-5)
    assert (d.meta["hook"], d.activation, d.k) == ("resid.3", "groupmax", 4)
    shutil.copytree(PEERS / "sparsify_groupmax", tmp_path / "layers.3.self_attn.q_proj")
    with pytest.raises(BadInputError, match="hook 'layers.3.self_attn.q_proj' has no equivalent"):
        load_dictionary(tmp_path / "layers.3.self_attn.q_proj")


@pytest.mark.parametrize("folder,message", [
    ("saelens_refuse_expected_average", "expected_average_only_in"),
])
def test_unreproducible_saelens_settings_are_refused(folder, message):
    with pytest.raises(BadInputError, match=message) as e:
        load_dictionary(PEERS / folder)
    assert "\n" not in str(e.value)


def test_sparsify_root_loads_every_hookpoint():
    found = load_dictionaries(PEERS / "sparsify_root")
    assert [Path(k).name for k in found] == ["layers.1", "layers.2.mlp"]
    assert [d.meta["hook"] for d in found.values()] == ["resid.1", "mlp.2"]
    with pytest.raises(BadInputError, match="checkpoint root with one dictionary per hookpoint"):
        load_dictionary(PEERS / "sparsify_root")
    assert load_dictionary(PEERS / "sparsify_root" / "layers.2.mlp").k == 6


def test_sparsify_root_without_hookpoint_folders_is_one_line(tmp_path):
    (tmp_path / "empty_run" / "notes").mkdir(parents=True)
    (tmp_path / "empty_run" / "config.json").write_text('{"model": "gpt2"}')
    with pytest.raises(BadInputError, match="no dictionary in .*, and no hookpoint folders") as e:
        load_dictionaries(tmp_path / "empty_run")
    assert "\n" not in str(e.value) and str(tmp_path / "empty_run") in str(e.value)


def test_our_format_round_trips_every_architecture(tmp_path):
    """A foreign dictionary saved in our format reloads to the same features."""
    for folder in ("saelens_gated_no_bdec", "saelens_standard_layer_norm",
                   "saelens_transcoder", "sparsify_root/layers.1"):
        d = load_dictionary(PEERS / folder)
        d.save(tmp_path / folder)
        back = load_dictionary(tmp_path / folder)
        x = load_file(str(PEERS / folder / "io.safetensors"))["x"]
        assert torch.equal(back.encode(x), d.encode(x)), folder
        assert back.meta == d.meta and back.encode_only == d.encode_only


def test_encode_only_reports_reconstruction_as_na(tmp_path):
    import numpy as np

    from autointerp.harvest.store import ActivationStore
    from tests.support.data import make_store

    d = load_dictionary(PEERS / "saelens_transcoder")
    g = torch.Generator().manual_seed(0)
    store = make_store(tmp_path / "s", torch.randn(256, 16, generator=g),
                       torch.randn(128, 16, generator=g), np.zeros(128, np.int32),
                       meta={"model": "gpt2", "hook": d.meta["hook"]})  # the transcoder's own input
    m = evaluate(d, ActivationStore(store))
    assert m.fvu is None and m.mse is None and m.l0 > 0


def test_score_expands_a_checkpoint_root():
    """`score --dict ROOT` scores every hookpoint: cli/score.py expands its --dict list."""
    from autointerp.dictionaries.sources import expand_specs

    root, single = PEERS / "sparsify_root", PEERS / "saelens_topk"
    assert expand_specs([root, single]) == [f"{root}/layers.1", f"{root}/layers.2.mlp",
                                            str(single)]


def test_jumprelu_log_threshold_checkpoints(tmp_path):
    """Older sae-lens JumpReLU files store log(threshold); sae-lens exponentiates it on load."""
    import shutil

    from safetensors.torch import save_file

    folder = tmp_path / "old_jumprelu"
    shutil.copytree(PEERS / "saelens_jumprelu", folder)
    t = load_file(str(folder / "sae_weights.safetensors"))
    t["log_threshold"] = t.pop("threshold").log()
    save_file(t, str(folder / "sae_weights.safetensors"))
    io = load_file(str(folder / "io.safetensors"))
    torch.testing.assert_close(load_dictionary(folder).encode(io["x"]), io["feature_acts"],
                               rtol=1e-5, atol=1e-5)
    del t["log_threshold"]
    save_file(t, str(folder / "sae_weights.safetensors"))
    with pytest.raises(BadInputError, match="lack tensor"):
        load_dictionary(folder)


@pytest.mark.parametrize("md,want", [
    ({"model_from_pretrained_kwargs": {"center_writing_weights": True},
      "sae_lens_training_version": "6.5.0"}, "center"),
    ({"model_from_pretrained_kwargs": {"center_writing_weights": False}}, None),
    ({"model_from_pretrained_kwargs": {"fold_ln": False}}, None),  # no_processing(**kwargs)
    ({}, "center"),  # silent and no version: trained by from_pretrained, which centres
    ({"sae_lens_training_version": None, "sae_lens_version": "6.54.12"}, "center"),
    ({"sae_lens_training_version": "4.1.0"}, None),  # silent after sae-lens PR #279
    ({"model_class_name": "AutoModelForCausalLM"}, None),
    ({"model_name": "gemma-2-2b"}, None),  # RMSNorm: TransformerLens does not centre
])
def test_transformerlens_centring_is_read_from_the_config(md, want):
    from autointerp.dictionaries.saelens import input_transform

    assert input_transform({"model_name": "gpt2-small", **md}) == want
