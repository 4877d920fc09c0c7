"""Hook translation against the source of truth: TransformerLens's own activation cache.

tests/fixtures/transformerlens/make_fixtures.py (run once with transformer-lens 3.9, versions in
versions.json) saved tiny random GPT-2, GPT-NeoX (parallel, as Pythia; and sequential) and
Llama models and TransformerLens's cache of blocks.L.hook_{resid_pre,resid_mid,resid_post,
mlp_out,attn_out} for a fixed token batch, with its default weight processing and without.
Here each TransformerLens name is translated into ours, captured through our hooks from the
same saved model and tokens, and must equal TransformerLens's value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from autointerp.errors import BadInputError
from autointerp.harvest.hook_names import translate_hook
from autointerp.harvest.hooks import capture, check_hook_supported, forward_with_replacement
from autointerp.harvest.models import load_causal_lm, parse_hook
from tests.support.models import single_torch_thread

one_torch_thread = pytest.fixture(autouse=True)(single_torch_thread)

FIXTURES = Path(__file__).parent / "fixtures" / "transformerlens"
FAMILIES = ("gpt2", "gpt_neox", "gpt_neox_sequential", "llama")
KINDS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out", "hook_attn_out")
ATOL = 1e-5  # measured max difference: 8.3e-7 (float32)


def _load(family: str):
    return load_causal_lm(str(FIXTURES / family), device="cpu", dtype="float32")


@pytest.mark.parametrize("variant", ["processed", "unprocessed"])
@pytest.mark.parametrize("family", FAMILIES)
def test_our_hooks_equal_transformerlens_cache(family, variant):
    lm = _load(family)
    ref = load_file(str(FIXTURES / family / f"{variant}.safetensors"))
    tokens = ref["tokens"]
    # TransformerLens's default processing centres the writing weights (LayerNorm models);
    # an SAE config that says so gets input_transform "center" (a no-op for Llama's RMSNorm).
    transform = "center" if variant == "processed" else None
    names = sorted(k for k in ref if k.startswith("blocks."))
    expected = {f"blocks.{layer}.{kind}" for layer in range(2) for kind in KINDS}
    if family == "gpt_neox":  # parallel attention: TransformerLens has no resid_mid either
        expected -= {f"blocks.{layer}.hook_resid_mid" for layer in range(2)}
    assert set(names) == expected
    for name in names:
        hook = parse_hook(translate_hook(name), lm.n_layers)
        ours = capture(lm, hook, tokens, input_transform=transform)
        err = (ours - ref[name]).abs().max().item()
        assert err < ATOL, f"{family}/{variant} {name} -> {hook.name}: max abs diff {err:.2e}"


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_processing_is_the_per_position_mean(family):
    """Why "center" exists: for LayerNorm families TransformerLens's processed residual stream is
    Hugging Face's minus its mean over d_model, and differs from it by far more than 1e-4."""
    lm = _load(family)
    ref = load_file(str(FIXTURES / family / "processed.safetensors"))
    raw = capture(lm, parse_hook("resid.0", lm.n_layers), ref["tokens"])
    assert (raw - ref["blocks.0.hook_resid_post"]).abs().max() > 100 * ATOL
    centred = raw - raw.mean(-1, keepdim=True)
    assert (centred - ref["blocks.0.hook_resid_post"]).abs().max() < ATOL


def test_parallel_attention_has_no_resid_mid():
    lm = _load("gpt_neox")
    with pytest.raises(BadInputError, match=r"in parallel \(use_parallel_residual\).*no resid_mid\.1") as e:
        check_hook_supported(lm.model, parse_hook("resid_mid.1", lm.n_layers), "tiny-pythia")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox_sequential"])
@pytest.mark.parametrize("spec", ["embed", "resid_mid.0", "resid_mid.1"])
def test_replacing_new_hook_points(family, spec):
    """Identity replacement leaves the logits unchanged; replacing embed or resid_mid changes
    what the later hook points see exactly as the replacement says."""
    lm = _load(family)
    tokens = load_file(str(FIXTURES / family / "unprocessed.safetensors"))["tokens"]
    hook = parse_hook(spec, lm.n_layers)
    with torch.no_grad():
        plain = lm.model(tokens).logits
    for transform in (None, "center"):
        same = forward_with_replacement(lm, hook, tokens, None, lambda x: x.clone(), transform)
        torch.testing.assert_close(same, plain, atol=1e-5, rtol=1e-5)
    changed = forward_with_replacement(lm, hook, tokens, None, lambda x: 2 * x)
    assert (changed - plain).abs().max() > 1e-3


def test_fixture_versions_are_recorded():
    versions = json.loads((FIXTURES / "versions.json").read_text())["versions"]
    assert versions["transformer-lens"] == "3.9.0" and versions["transformers"]
