"""Harvest at the new hook points (embed, resid_mid.L), named in any vocabulary, with the
centring input transform; and the one-line refusals around them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.errors import BadInputError
from autointerp.harvest.hooks import capture, check_hook_supported
from autointerp.harvest.models import LoadedModel, load_causal_lm, parse_hook
from autointerp.harvest.run import HarvestConfig, harvest
from autointerp.harvest.store import from_storage
from tests.support.cli import error_line, run_cli
from tests.support.models import corpus_text, single_torch_thread

one_torch_thread = pytest.fixture(autouse=True)(single_torch_thread)
# The module whose input is resid_mid, by name, per family: an independent reading of the
# point our hooks compute as block input + attention output.
MLP_NORM = {"gpt2": "transformer.h.{}.ln_2", "llama": "model.layers.{}.post_attention_layernorm"}


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    """Short documents (one per line), so that both splits get some within a few thousand tokens."""
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    lines = [json.dumps({"text": " ".join(p.split()[:60])}) for p in corpus_text(0).split("\n\n")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stored_sequences(store: Path) -> list[tuple[np.ndarray, torch.Tensor]]:
    meta = json.loads((store / "metadata.json").read_text())
    out = []
    for i in range(len(meta["shards"]["eval"])):
        stem = store / "eval" / f"{i:05d}"
        acts = from_storage(np.load(f"{stem}.acts.npy"), meta["store_dtype"])
        tokens, offsets = np.load(f"{stem}.tokens.npy"), np.load(f"{stem}.offsets.npy")
        out += [(tokens[a:b], acts[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    return out


def reference(lm, ids: torch.Tensor, hook: str) -> torch.Tensor:
    """The activation read straight from the Hugging Face model, without our hook code."""
    with torch.no_grad():
        if hook == "embed":
            return lm.model(ids, output_hidden_states=True).hidden_states[0][0]
        layer = int(hook.split(".")[1])
        family = "gpt2" if hasattr(lm.model, "transformer") else "llama"
        norm = lm.model.get_submodule(MLP_NORM[family].format(layer))
        box = []
        handle = norm.register_forward_pre_hook(lambda _m, args: box.append(args[0]))
        try:
            lm.model(ids)
        finally:
            handle.remove()
        return box[0][0]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("hook, layer, name", [
    ("embed", None, "embed"), ("resid_mid", 1, "resid_mid.1"),
    ("blocks.0.hook_resid_pre", None, "embed"), ("blocks.2.hook_resid_mid", None, "resid_mid.2"),
])
@pytest.mark.parametrize("transform", [None, "center"])
def test_stored_new_hook_points_equal_the_model(tiny_models, corpus_file, tmp_path, family, hook,
                                                layer, name, transform):
    cfg = HarvestConfig(out=tmp_path / "store", hook=hook, layer=layer,
                        model=str(tiny_models[family]), corpus=str(corpus_file), n_tokens=2000,
                        eval_fraction=0.5, fragment_len=16, batch_size=8, device="cpu",
                        dtype="float32", input_transform=transform)
    harvest(cfg)
    meta = json.loads((cfg.out / "metadata.json").read_text())
    # "center" is TransformerLens's centring of writing weights: LayerNorm models only.
    applied = transform if family == "gpt2" else None
    assert (meta["hook"], meta["input_transform"]) == (name, applied)
    assert meta["args"].get("input_transform") == transform
    assert meta["center_is_noop"] == (family == "llama")
    assert meta["layer"] == (None if name == "embed" else int(name.split(".")[1]))
    lm = load_causal_lm(cfg.model, device="cpu", dtype="float32")
    sequences = stored_sequences(cfg.out)
    assert len(sequences) >= 3
    for tokens, acts in sequences[:3]:
        ids = torch.tensor([[meta["bos_token_id"], *tokens.tolist()]])
        expected = reference(lm, ids, name)[1:]
        if applied == "center":
            expected = expected - expected.mean(-1, keepdim=True)
        torch.testing.assert_close(acts, expected, rtol=2e-3, atol=2e-5)


def test_hook_names_normalise_to_one_store_identity(tmp_path):
    common = {"model": "m", "corpus": "c", "out": tmp_path / "s"}
    by_kind = HarvestConfig(hook="resid", layer=1, **common)
    assert HarvestConfig(hook="blocks.2.hook_resid_pre", **common).identity() == by_kind.identity()
    assert HarvestConfig(hook="layers.1", **common).identity() == by_kind.identity()
    assert HarvestConfig(hook="resid.1", layer=1, **common).hook_spec == "resid.1"
    assert "input_transform" not in by_kind.identity()  # earlier stores keep their identity
    centred = HarvestConfig(hook="resid", layer=1, input_transform="center", **common)
    assert centred.identity()["input_transform"] == "center"
    assert HarvestConfig(hook="embed", **common).hook_spec == "embed"


@pytest.mark.parametrize("kwargs, message", [
    ({"hook": "resid"}, "--hook resid needs --layer"),
    ({"hook": "embed", "layer": 2}, "--hook embed is embed, which is not at --layer 2"),
    ({"hook": "blocks.3.hook_resid_post", "layer": 2}, "is resid.3, which is not at --layer 2"),
    ({"hook": "blocks.3.attn.hook_q"}, "hook 'blocks.3.attn.hook_q' has no equivalent"),
    ({"hook": "mlp", "layer": 1, "input_transform": "scale"}, "unknown input transform 'scale'"),
])
def test_bad_hook_arguments(kwargs, message, tmp_path):
    with pytest.raises(BadInputError, match=message.replace(".", r"\.")) as e:
        HarvestConfig(model="m", corpus="c", out=tmp_path / "s", **kwargs)
    assert "\n" not in str(e.value)


def test_cli_hook_names_and_refusals(tiny_models, corpus_file, tmp_path):
    base = ["harvest", "--corpus", corpus_file, "--tokens", "600", "--device", "cpu",
            "--dtype", "float32", "--eval-fraction", "0.5"]
    ok = run_cli(base + ["--model", tiny_models["gpt2"], "--hook", "blocks.1.hook_resid_pre",
                         "--input-transform", "center", "--out", tmp_path / "a"])
    assert ok.returncode == 0, ok.stderr
    meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert (meta["hook"], meta["layer"], meta["input_transform"]) == ("resid.0", 0, "center")
    # The same folder without the transform is another store: refused, not mixed.
    with pytest.raises(BadInputError, match=r"different: input_transform\)"):
        harvest(HarvestConfig(hook="resid", layer=0, model=str(tiny_models["gpt2"]),
                              corpus=str(corpus_file), n_tokens=600, eval_fraction=0.5,
                              device="cpu", dtype="float32", out=tmp_path / "a"))
    untranslatable = run_cli(base + ["--model", tiny_models["gpt2"], "--hook",
                                     "blocks.1.attn.hook_q", "--out", tmp_path / "b"])
    assert "'blocks.1.attn.hook_q' has no equivalent" in error_line(untranslatable)
    parallel = run_cli(base + ["--model", tiny_models["gpt_neox"], "--hook", "resid_mid",
                               "--layer", "1", "--out", tmp_path / "c"])
    assert "in parallel (use_parallel_residual)" in error_line(parallel)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def _bare(model) -> LoadedModel:
    return LoadedModel(model=model.eval(), tokenizer=None, name="tiny", weights_hash="",
                       n_layers=2, d_model=32, device="cpu", dtype="float32")


def test_post_norm_family_reads_its_residual_stream():
    """OLMo 2 normalises the attention and MLP outputs before adding them: resid_mid is block
    input + the post-attention norm's output (checked on every batch against the block's
    output), attn_post / mlp_post are those norms' outputs, and it has no norm in front of its
    MLP, so mlp_normalized is refused in one line."""
    from transformers import Olmo2Config, Olmo2ForCausalLM

    torch.manual_seed(0)
    lm = _bare(Olmo2ForCausalLM(Olmo2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32)))
    ids = torch.randint(0, 64, (2, 7))
    assert capture(lm, parse_hook("attn.1", 2), ids).shape == (2, 7, 32)
    mid, post = (capture(lm, parse_hook(h, 2), ids) for h in ("resid_mid.1", "mlp_post.1"))
    torch.testing.assert_close(mid + post, capture(lm, parse_hook("resid.1", 2), ids))
    assert (capture(lm, parse_hook("mlp.1", 2), ids) - post).abs().max() > 1e-3
    with pytest.raises(BadInputError, match="cannot find the norm in front of the MLP") as e:
        check_hook_supported(lm.model, parse_hook("mlp_normalized.1", 2), "tiny-olmo2")
    assert "\n" not in str(e.value)


def test_post_norm_outputs_are_refused_without_post_norms(tiny_models):
    lm = load_causal_lm(str(tiny_models["llama"]), device="cpu", dtype="float32")
    with pytest.raises(BadInputError, match="has no post-mlp norm"):
        check_hook_supported(lm.model, parse_hook("mlp_post.1", lm.n_layers), "tiny-llama")


@pytest.mark.parametrize("family", ["gptj", "phi", "falcon"])
def test_parallel_families_have_no_resid_mid(family):
    from transformers import FalconConfig, GPTJConfig, PhiConfig

    config = {"gptj": GPTJConfig(n_embd=32, n_layer=2, n_head=4, vocab_size=64, rotary_dim=4),
              "phi": PhiConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, vocab_size=64),
              "falcon": FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     vocab_size=64, parallel_attn=True)}[family]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(BadInputError, match="in parallel .* no resid_mid.0"):
        check_hook_supported(model, parse_hook("resid_mid.0", 2), family)
    check_hook_supported(model, parse_hook("resid.0", 2), family)


@pytest.mark.slow
def test_smollm2_embed_and_resid_mid():
    """The real offline default (a Llama-family model, 30 blocks): embed and resid_mid.15 as
    Hugging Face computes them, and the per-batch resid_mid check passes on real weights."""
    lm = load_causal_lm("smollm2-135m", device="cpu", dtype="float32")
    ids = lm.tokenizer(["The cat sat on the mat and looked at the sea."], return_tensors="pt")["input_ids"]
    for spec in ("embed", "resid_mid.15"):
        ours = capture(lm, parse_hook(spec, lm.n_layers), ids)[0]
        torch.testing.assert_close(ours, reference(lm, ids, spec), rtol=1e-5, atol=1e-5)
