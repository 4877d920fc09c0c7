import pytest

from autointerp.errors import BadInputError
from autointerp.harvest.hook_names import split_hook, translate_hf_point, translate_hook


@pytest.mark.parametrize("name, ours", [
    ("resid.7", "resid.7"), ("7", "resid.7"), (3, "resid.3"), ("mlp.2", "mlp.2"),
    ("attn.0", "attn.0"), ("resid_mid.4", "resid_mid.4"), ("embed", "embed"),
    ("blocks.8.hook_resid_pre", "resid.7"), ("blocks.0.hook_resid_pre", "embed"),
    ("blocks.8.hook_resid_post", "resid.8"), ("blocks.5.hook_resid_mid", "resid_mid.5"),
    ("blocks.5.hook_mlp_out", "mlp.5"), ("blocks.5.hook_mlp_in", "resid_mid.5"), ("blocks.5.hook_attn_out", "attn.5"),
    ("layers.6", "resid.6"), ("layers.6.mlp", "mlp.6"), ("layers.6.self_attn", "attn.6"),
    ("layers.6.attention", "attn.6"), ("gpt_neox.layers.2", "resid.2"),
    ("model.layers.2.mlp", "mlp.2"), ("transformer.h.11", "resid.11"),
    ("transformer.h.11.attn", "attn.11"), ("embed_tokens", "embed"),
    ("model.embed_tokens", "embed"), ("gpt_neox.embed_in", "embed"),
    ("blocks.3.attn.hook_z", "attn_z.3"), ("blocks.3.ln2.hook_normalized", "mlp_normalized.3"),
    ("blocks.3.mlp.hook_in", "mlp_in.3"), ("hook_embed", "token_embed"),
    ("transformer.wte", "token_embed"), ("attn_post.2", "attn_post.2"),
])
def test_translate(name, ours):
    assert translate_hook(name) == ours


@pytest.mark.parametrize("name", ["blocks.3.attn.hook_q", "blocks.3.mlp.hook_post",
                                  "blocks.3.ln1.hook_normalized", "layers.3.mlp.act_fn", ""])
def test_untranslatable_is_refused_naming_the_hook(name):
    with pytest.raises(BadInputError) as e:
        translate_hook(name)
    assert f"'{name}'" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name, post_norm, ours", [
    ("model.layers.5.self_attn.o_proj.input", True, "attn_z.5"),
    ("model.layers.5.pre_feedforward_layernorm.output", True, "mlp_in.5"),
    ("model.layers.5.post_feedforward_layernorm.output", True, "mlp_post.5"),
    ("model.layers.5.post_attention_layernorm.output", True, "attn_post.5"),
    ("model.layers.5.post_attention_layernorm.output", False, "mlp_in.5"),  # Llama: pre-MLP
    ("model.layers.5.output", False, "resid.5"), ("model.layers.5", False, "resid.5"),
    ("model.layers.5.mlp.input", False, "mlp_in.5"),
])
def test_translate_hugging_face_points(name, post_norm, ours):
    assert translate_hf_point(name, post_norm) == ours


def test_split():
    assert split_hook("resid_mid.4") == ("resid_mid", 4)
    assert split_hook("embed") == ("embed", None)
