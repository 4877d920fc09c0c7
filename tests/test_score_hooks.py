"""`score` and `inspect` against the hook point, model and input transform a dictionary
declares: a store of another hook or model is refused in one line naming both (after
translation and model aliases), --force lets it through and is recorded with the run, and
`score --model` without --layer harvests the dictionary's own hook point and transform."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from autointerp.dictionaries.dictionary import Dictionary, canonical_model, check_compatible
from autointerp.dictionaries.sources import load_dictionary
from autointerp.errors import BadInputError
from autointerp.harvest.run import HarvestConfig, harvest
from autointerp.harvest.store import ActivationStore
from autointerp.scoring.stores import HarvestSpec, harvest_for, hook_for
from tests.support.cli import error_line, run_cli
from tests.support.models import corpus_text, single_torch_thread, tiny_model_dirs

one_torch_thread = pytest.fixture(autouse=True)(single_torch_thread)
D_MODEL, N_FEATURES = 32, 48
LEXICAL = ["--explainer", "lexical", "--scoring-backend", "lexical", "--no-selftest", "--n-sampled", "3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny GPT-2 (its folder is named gpt2), a corpus, and its stores at resid.1 and resid.2."""
    root = tmp_path_factory.mktemp("score-hooks")
    models = tiny_model_dirs(tmp_path_factory)
    corpus = root / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": " ".join(p.split()[:60])})
                                for p in corpus_text(0).split("\n\n")) + "\n", encoding="utf-8")
    stores = {}
    for name, family in (("resid.1", "gpt2"), ("resid.2", "gpt2"), ("llama-resid.1", "llama")):
        stores[name] = harvest(HarvestConfig(
            hook=name.rsplit("-", 1)[-1], model=str(models[family]), corpus=str(corpus),
            n_tokens=3000, eval_fraction=0.5, device="cpu", dtype="float32", batch_size=16,
            out=root / name))
    return {"root": root, "models": models, "corpus": corpus, "stores": stores}


def saelens_folder(path: Path, hook_name: str, model_name: str) -> Path:
    """A sae-lens-style standard SAE folder (cfg.json + sae_weights.safetensors)."""
    gen = torch.Generator().manual_seed(0)
    W_enc = torch.randn(D_MODEL, N_FEATURES, generator=gen) / D_MODEL ** 0.5  # (d_in, d_sae)
    path.mkdir(parents=True)
    save_file({"W_enc": W_enc, "b_enc": torch.zeros(N_FEATURES),
               "W_dec": W_enc.T.contiguous(), "b_dec": torch.zeros(D_MODEL)},
              str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps({
        "architecture": "standard", "d_in": D_MODEL, "d_sae": N_FEATURES,
        "apply_b_dec_to_input": True, "normalize_activations": "none",
        "metadata": {"model_name": model_name, "hook_name": hook_name,
                     "model_from_pretrained_kwargs": {}}}))
    return path


def our_folder(path: Path, meta: dict) -> Path:
    gen = torch.Generator().manual_seed(1)
    W = torch.randn(N_FEATURES, D_MODEL, generator=gen)
    return Dictionary(W, torch.zeros(N_FEATURES), W.clone(), torch.zeros(D_MODEL),
                      meta={"method": "random-dirs", **meta}).save(path)


@pytest.mark.parametrize("a, b, same", [
    ("gpt2-small", "gpt2", True), ("EleutherAI/pythia-70m", "pythia-70m", True),
    ("/data/models/gpt2/", "gpt2", True), ("google/gemma-2-2b", "gemma-2-2b", True),
    ("pythia-70m", "pythia-70m-deduped", False), ("gpt2-medium", "gpt2", False),
])
def test_model_aliases(a, b, same):
    assert (canonical_model(a) == canonical_model(b)) is same


def test_check_compatible_translates_and_names_both(setup, tmp_path):
    store = ActivationStore(setup["stores"]["resid.2"])
    # blocks.2.hook_resid_pre is the input of block 2: our resid.1, not the store's resid.2.
    d = load_dictionary(saelens_folder(tmp_path / "pre2", "blocks.2.hook_resid_pre", "gpt2-small"))
    with pytest.raises(BadInputError) as e:
        check_compatible(d, store)
    message = str(e.value)
    assert "hook resid.1 (blocks.2.hook_resid_pre)" in message and "hook resid.2" in message
    assert "\n" not in message and "--force" in message
    assert check_compatible(d, store, force=True) == [message.split(" (pass --force")[0]]
    post = load_dictionary(saelens_folder(tmp_path / "post2", "blocks.2.hook_resid_post", "gpt2-small"))
    assert check_compatible(post, store) == []  # gpt2-small is the store's gpt2 folder
    other = load_dictionary(saelens_folder(tmp_path / "neo", "blocks.2.hook_resid_post",
                                           "EleutherAI/pythia-70m"))
    with pytest.raises(BadInputError, match=r"model EleutherAI/pythia-70m but .* holds model .*gpt2"):
        check_compatible(other, store)


def test_input_transform_must_match(setup, tmp_path):
    gpt2 = ActivationStore(setup["stores"]["resid.1"])
    centred = load_dictionary(our_folder(tmp_path / "c", {"hook": "resid.1", "model": "gpt2",
                                                          "input_transform": "center"}))
    with pytest.raises(BadInputError, match="expects input transform center but .* was harvested "
                                            "with none"):
        check_compatible(centred, gpt2)
    # Llama normalises with RMSNorm: TransformerLens does not centre it, and neither do we.
    llama = ActivationStore(setup["stores"]["llama-resid.1"])
    centred.meta["model"] = None
    assert check_compatible(centred, llama) == []


def test_untranslatable_dictionary_hook_is_refused(setup, tmp_path):
    # The readers translate at load, so such a dictionary never reaches a store check.
    with pytest.raises(BadInputError, match="hook 'blocks.1.attn.hook_q' has no equivalent"):
        load_dictionary(saelens_folder(tmp_path / "z", "blocks.1.attn.hook_q", "gpt2"))
    # A dictionary of ours written with a foreign name is translated (and refused) at the check.
    d = load_dictionary(our_folder(tmp_path / "ours-z", {"hook": "blocks.1.attn.hook_q"}))
    store = ActivationStore(setup["stores"]["resid.1"])
    with pytest.raises(BadInputError, match="hook 'blocks.1.attn.hook_q' has no equivalent"):
        check_compatible(d, store)
    assert "no equivalent" in check_compatible(d, store, force=True)[0]


def test_cli_refuses_a_store_at_another_hook_then_force_is_recorded(setup, tmp_path):
    d = saelens_folder(tmp_path / "pre2", "blocks.2.hook_resid_pre", "gpt2-small")
    base = ["score", "--dict", d, "--db", tmp_path / "db.sqlite", "--acts",
            setup["stores"]["resid.2"], *LEXICAL]
    hook = error_line(run_cli(base))
    assert "resid.1 (blocks.2.hook_resid_pre)" in hook and "hook resid.2" in hook
    assert not (tmp_path / "db.sqlite").exists()  # refused before anything was written
    post = saelens_folder(tmp_path / "post1", "blocks.1.hook_resid_post", "gpt2-small")
    model = error_line(run_cli(["score", "--dict", post, "--acts", setup["stores"]["llama-resid.1"],
                                "--db", tmp_path / "db.sqlite", *LEXICAL]))
    assert "model gpt2-small but" in model and "holds model" in model and "llama" in model
    forced = run_cli(base + ["--force"])
    assert forced.returncode == 0, forced.stderr
    assert "warning (--force)" in forced.stderr
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        configs = [json.loads(c) for (c,) in db.execute("select config from runs")]
    assert len(configs) == 1 and configs[0]["forced"] is True
    assert "hook resid.2" in configs[0]["forced_mismatches"][0]


def test_score_model_harvests_the_dictionarys_own_hook_and_transform(setup, tmp_path):
    d = our_folder(tmp_path / "d", {"hook": "blocks.2.hook_resid_pre", "model": "gpt2-small",
                                    "input_transform": "center"})
    plain = our_folder(tmp_path / "p", {"hook": "layers.1", "model": "gpt2"})
    spec = HarvestSpec(str(setup["models"]["gpt2"]), None, None, str(setup["corpus"]), 1500,
                       device="cpu")
    stores = harvest_for([d, plain], spec)
    metas = {p: ActivationStore(s).meta for p, s in stores.items()}
    assert (metas[d]["hook"], metas[d]["input_transform"]) == ("resid.1", "center")
    assert (metas[plain]["hook"], metas[plain]["input_transform"]) == ("resid.1", None)
    for path, store in stores.items():
        assert check_compatible(load_dictionary(path), ActivationStore(store)) == []
    override = HarvestSpec(spec.model, "mlp", 0, spec.corpus, 1500, device="cpu")
    with pytest.raises(BadInputError, match="fit at hook resid.1, but --hook/--layer ask for mlp.0"):
        hook_for(plain, load_dictionary(plain).meta, override)  # before any harvest
    forced = HarvestSpec(spec.model, "mlp", 0, spec.corpus, 1500, device="cpu", force=True)
    assert hook_for(plain, load_dictionary(plain).meta, forced) == "mlp.0"
    assert hook_for(plain, load_dictionary(plain).meta,
                    HarvestSpec(spec.model, "layers.1", None, spec.corpus, 1500)) == "resid.1"
    bare = our_folder(tmp_path / "bare", {"model": "gpt2"})
    with pytest.raises(BadInputError, match="declares no hook point; pass --hook"):
        harvest_for([bare], spec)
    llama = HarvestSpec(str(setup["models"]["llama"]), None, None, spec.corpus, 1500)
    with pytest.raises(BadInputError, match="model gpt2-small, not .*llama"):
        harvest_for([d], llama)


def test_inspect_prints_translated_hook(tmp_path, capsys):
    from autointerp.cli.display import print_dictionary

    d = saelens_folder(tmp_path / "pre2", "blocks.2.hook_resid_pre", "gpt2-small")
    print_dictionary(load_dictionary(d), d)
    out = capsys.readouterr().out
    assert "resid.1 (as written: blocks.2.hook_resid_pre)" in out and "gpt2-small" in out


def test_inspect_shows_architecture_and_source(tmp_path, capsys):
    from autointerp.cli.display import print_dictionary

    path = our_folder(tmp_path / "d", {"hook": "resid.1", "hook_source_name": "layers.1",
                                       "architecture": "jumprelu", "model": "gpt2",
                                       "source": "hf:org/repo/layer_1", "input_transform": "center"})
    print_dictionary(load_dictionary(path), path)
    out = capsys.readouterr().out
    for text in ("resid.1 (as written: layers.1)", "architecture", "jumprelu",
                 "hf:org/repo/layer_1", "input_transform", "center"):
        assert text in out, text
