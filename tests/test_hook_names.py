import pytest

from autointerp.errors import BadInputError
from autointerp.harvest.hook_names import split_hook, translate_hook


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
])
def test_translate(name, ours):
    assert translate_hook(name) == ours


@pytest.mark.parametrize("name", ["blocks.3.attn.hook_z", "blocks.3.attn.hook_q",
                                  "blocks.3.mlp.hook_post", "hook_embed", "transformer.wte",
                                  "blocks.3.ln2.hook_normalized", "layers.3.mlp.act_fn", ""])
def test_untranslatable_is_refused_naming_the_hook(name):
    with pytest.raises(BadInputError) as e:
        translate_hook(name)
    assert f"'{name}'" in str(e.value) and "\n" not in str(e.value)


def test_split():
    assert split_hook("resid_mid.4") == ("resid_mid", 4)
    assert split_hook("embed") == ("embed", None)
