"""Subject models: loading by path, block discovery, hook points, early stop, replacement,
weights hash and random init, on tiny random GPT-NeoX / GPT-2 / Llama models built here;
and the real offline SmolLM2."""

from __future__ import annotations

import time

import pytest
import torch

from autointerp.errors import BadInputError
from autointerp.harvest.models import (
    capture,
    find_blocks,
    forward_with_replacement,
    load_causal_lm,
    parse_hook,
)
from tests.support.models import FAMILIES, single_torch_thread

one_torch_thread = pytest.fixture(autouse=True)(single_torch_thread)


@pytest.mark.parametrize("family", FAMILIES)
def test_blocks_and_hook_points_are_found_generically(tiny_models, family):
    lm = load_causal_lm(str(tiny_models[family]), device="cpu", dtype="float32")
    assert (lm.n_layers, lm.d_model, lm.device, lm.dtype) == (3, 32, "cpu", "float32")
    assert len(find_blocks(lm.model)) == 3
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        hidden = lm.model(ids, output_hidden_states=True).hidden_states
    # The residual stream adds each block's attention and MLP outputs (sequential in GPT-2 and
    # Llama, parallel in GPT-NeoX): resid.1 = resid.0 + attn.1 + mlp.1. This holds only if the
    # right submodules were found (not e.g. Llama's post_attention_layernorm).
    resid0, resid1, attn1, mlp1 = (capture(lm, parse_hook(s, 3), ids)
                                   for s in ("resid.0", "1", "attn.1", "mlp.1"))
    torch.testing.assert_close(resid0, hidden[1])
    torch.testing.assert_close(resid1, hidden[2])
    torch.testing.assert_close(resid0 + attn1 + mlp1, resid1, rtol=1e-5, atol=1e-6)
    assert resid1.shape == (2, 9, 32)


def test_capture_stops_after_the_hooked_block(tiny_models):
    lm = load_causal_lm(str(tiny_models["llama"]), device="cpu")
    calls = []
    handle = find_blocks(lm.model)[2].register_forward_hook(lambda *a: calls.append(1))
    try:
        capture(lm, parse_hook("resid.0", 3), torch.randint(0, 300, (1, 5)))
        assert calls == []  # block 2 never ran
        capture(lm, parse_hook("resid.2", 3), torch.randint(0, 300, (1, 5)))
        assert calls == [1]
    finally:
        handle.remove()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_forward_with_replacement(tiny_models, family):
    lm = load_causal_lm(str(tiny_models[family]), device="cpu")
    ids = torch.randint(0, 300, (2, 7))
    with torch.no_grad():
        plain = lm.model(ids).logits
    for spec in ("resid.1", "attn.0", "mlp.2"):
        hook = parse_hook(spec, 3)
        same = forward_with_replacement(lm, hook, ids, None, lambda x: x.clone())
        torch.testing.assert_close(same, plain)
        changed = forward_with_replacement(lm, hook, ids, None, lambda x: torch.zeros_like(x) + 3.0)
        assert (changed - plain).abs().max() > 1e-3


def test_weights_hash_and_random_init(tiny_models):
    path = str(tiny_models["gpt_neox"])
    a, b = load_causal_lm(path, device="cpu"), load_causal_lm(path, device="cpu")
    assert a.weights_hash == b.weights_hash and len(a.weights_hash) == 64
    r1 = load_causal_lm(path, device="cpu", random_init_seed=1)
    r1_again = load_causal_lm(path, device="cpu", random_init_seed=1)
    r2 = load_causal_lm(path, device="cpu", random_init_seed=2)
    assert r1.weights_hash == r1_again.weights_hash
    assert len({a.weights_hash, r1.weights_hash, r2.weights_hash}) == 3
    assert r1.random_init_seed == 1 and r1.n_layers == a.n_layers
    assert r1.tokenizer.get_vocab() == a.tokenizer.get_vocab()
    bf16 = load_causal_lm(path, device="cpu", dtype="bfloat16")
    assert bf16.dtype == "bfloat16" and next(bf16.model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("spec, message", [
    ("resid.3", "layer 3 is out of range: tiny has layers 0..2"),
    ("40", "layer 40 is out of range: tiny has layers 0..2"),
    ("resid.-1", "layer -1 is out of range"),
    ("mlpx.1", "unknown hook point 'mlpx.1'"),
    ("attn.one", "needs an integer layer"),
])
def test_parse_hook_errors(spec, message):
    with pytest.raises(BadInputError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_hook(spec, 3, "tiny")


def test_parse_hook_forms():
    assert parse_hook("7", 30).name == "resid.7"
    assert parse_hook(7, 30) == parse_hook("resid.7", 30)
    assert (parse_hook("mlp.0", 1).kind, parse_hook("attn.29", 30).layer) == ("mlp", 29)


@pytest.mark.parametrize("name, message", [
    ("./no/such/folder", "no such folder"),
    ("no-such-org/no-such-model-xyz", "cannot load model 'no-such-org/no-such-model-xyz'"),
])
def test_unloadable_model_is_one_line_error(name, message):
    started = time.perf_counter()
    with pytest.raises(BadInputError, match=message) as info:
        load_causal_lm(name)
    assert "\n" not in str(info.value)
    assert time.perf_counter() - started < 15  # transformers alone retries the hub for ~30 s


@pytest.mark.slow
def test_smollm2_says_paris():
    lm = load_causal_lm("smollm2-135m", device="cpu")
    assert (lm.n_layers, lm.d_model) == (30, 576)
    ids = lm.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = lm.model(**ids).logits
    assert lm.tokenizer.decode(logits[0, -1].argmax()) == " Paris"
