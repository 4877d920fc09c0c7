"""Hook translation against the source of truth: TransformerLens's own activation cache.

tests/fixtures/transformerlens/make_fixtures.py (run once with transformer-lens 3.9, versions in
versions.json) saved tiny random GPT-2, GPT-NeoX (parallel, as Pythia; and sequential), Llama
(grouped-query attention) and Gemma 2 (post-norms, n_heads * d_head != d_model) models and
TransformerLens's cache of blocks.L.hook_{resid_pre,resid_mid,resid_post,mlp_out,attn_out},
blocks.L.attn.hook_z, blocks.L.ln2.hook_normalized and hook_embed for a fixed token batch, with
its default weight processing and without, plus TransformerBridge's blocks.L.mlp.hook_in.
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
FAMILIES = ("gpt2", "gpt_neox", "gpt_neox_sequential", "llama", "gemma2")
KINDS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out", "hook_attn_out",
         "attn.hook_z", "ln2.hook_normalized")
ATOL = 1e-5  # measured max difference: 8.3e-7 (float32)
SPREAD_TOL = 1e-4  # of the activation's spread (max - min); measured at most 4.1e-7


def _load(family: str):
    return load_causal_lm(str(FIXTURES / family), device="cpu", dtype="float32")


def ours_for(family: str, tl_name: str) -> str:
    """Our name for a TransformerLens hook, as the sae-lens reader translates it: in Gemma 2
    hook_attn_out / hook_mlp_out come after the post-norms."""
    if family == "gemma2" and tl_name.endswith(("hook_attn_out", "hook_mlp_out")):
        kind = "attn" if tl_name.endswith("hook_attn_out") else "mlp"
        return f"{kind}_post.{tl_name.split('.')[1]}"
    return translate_hook(tl_name)


def transform_for(variant: str, hook_kind: str) -> str | None:
    """TransformerLens's processing seen from one hook point, as the readers record it."""
    if variant != "processed":
        return None
    return "fold_value_biases" if hook_kind == "attn_z" else "center"


def assert_close_to_spread(ours, ref, what):
    spread = (ref.max() - ref.min()).item()
    err = (ours - ref).abs().max().item()
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    assert err <= SPREAD_TOL * spread, f"{what}: max abs diff {err:.2e}, spread {spread:.2e}"


@pytest.mark.parametrize("variant", ["processed", "unprocessed"])
@pytest.mark.parametrize("family", FAMILIES)
def test_our_hooks_equal_transformerlens_cache(family, variant):
    lm = _load(family)
    ref = load_file(str(FIXTURES / family / f"{variant}.safetensors"))
    tokens = ref["tokens"]
    names = sorted(k for k in ref if k.startswith("blocks."))
    expected = {f"blocks.{layer}.{kind}" for layer in range(2) for kind in KINDS}
    if family == "gpt_neox":  # parallel attention: TransformerLens has no resid_mid either
        expected -= {f"blocks.{layer}.hook_resid_mid" for layer in range(2)}
    assert set(names) == expected
    for name in names + ["hook_embed"]:
        hook = parse_hook(ours_for(family, name), lm.n_layers)
        ours = capture(lm, hook, tokens, input_transform=transform_for(variant, hook.kind))
        what = f"{family}/{variant} {name} -> {hook.name}"
        if hook.kind in ("attn_z", "mlp_normalized", "token_embed", "attn_post", "mlp_post"):
            assert_close_to_spread(ours, ref[name], what)
        else:
            err = (ours - ref[name]).abs().max().item()
            assert err < ATOL, f"{what}: max abs diff {err:.2e}"


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2"])
def test_mlp_in_equals_transformer_bridge(family):
    """What the MLP receives: TransformerBridge's blocks.L.mlp.hook_in (unprocessed)."""
    lm = _load(family)
    ref = load_file(str(FIXTURES / family / "bridge.safetensors"))
    for layer in range(2):
        name = f"blocks.{layer}.mlp.hook_in"
        hook = parse_hook(translate_hook(name), lm.n_layers)
        assert hook.name == f"mlp_in.{layer}"
        assert_close_to_spread(capture(lm, hook, ref["tokens"]), ref[name], f"{family} {name}")


def test_attn_z_width_and_the_value_bias_fold_matter():
    """Gemma 2's heads are 4 x 16 wide, not d_model 32; GPT-2's processed hook_z differs from
    Hugging Face's heads' outputs by the folded value bias, far more than the tolerance."""
    gemma = _load("gemma2")
    tokens = load_file(str(FIXTURES / "gemma2" / "unprocessed.safetensors"))["tokens"]
    assert capture(gemma, parse_hook("attn_z.1", 2), tokens).shape[-1] == 64
    gpt2 = _load("gpt2")
    ref = load_file(str(FIXTURES / "gpt2" / "processed.safetensors"))
    raw = capture(gpt2, parse_hook("attn_z.0", 2), ref["tokens"])
    spread = (ref["blocks.0.attn.hook_z"].max() - ref["blocks.0.attn.hook_z"].min()).item()
    assert (raw - ref["blocks.0.attn.hook_z"]).abs().max().item() > 100 * SPREAD_TOL * spread


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


@pytest.mark.parametrize("family, spec", [
    (family, spec) for family in ("gpt2", "llama", "gpt_neox_sequential")
    for spec in ("embed", "resid_mid.0", "resid_mid.1")] + [
    (family, spec) for family in ("gpt2", "gemma2")
    for spec in ("attn_z.0", "mlp_in.1", "token_embed")] + [
    ("gemma2", "mlp_post.0"), ("gemma2", "attn_post.1"), ("gemma2", "resid_mid.1")])
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
    # Not a pure scaling, which the post-norms of Gemma 2 would undo.
    changed = forward_with_replacement(lm, hook, tokens, None, lambda x: 2 * x + 0.5)
    assert (changed - plain).abs().max() > 1e-3


def test_fixture_versions_are_recorded():
    versions = json.loads((FIXTURES / "versions.json").read_text())["versions"]
    assert versions["transformer-lens"] == "3.9.0" and versions["transformers"]
    hooks = json.loads((FIXTURES / "versions.json").read_text())["hooks"]
    assert "blocks.1.attn.hook_z" in hooks["gemma2/processed"]
    assert hooks["llama/bridge"] == ["blocks.0.mlp.hook_in", "blocks.1.mlp.hook_in"]


def test_replacing_attn_z_under_the_value_bias_fold():
    """The replacement sees processed hook_z (TransformerLens's values) and the model gets the
    Hugging Face values back: identity leaves the logits unchanged."""
    lm = _load("gpt2")
    ref = load_file(str(FIXTURES / "gpt2" / "processed.safetensors"))
    seen = []

    def identity(x):
        seen.append(x.clone())
        return x
    with torch.no_grad():
        plain = lm.model(ref["tokens"]).logits
    same = forward_with_replacement(lm, parse_hook("attn_z.1", 2), ref["tokens"], None, identity,
                                    "fold_value_biases")
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=1e-5)
    assert_close_to_spread(seen[0], ref["blocks.1.attn.hook_z"], "replaced attn_z.1")
