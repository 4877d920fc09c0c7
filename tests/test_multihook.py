"""Many hook points in one forward pass: one store per hook point, each
identical, file for file and bit for bit, to the store a single-hook harvest writes; the
forward stops after the deepest hooked block; `--layers 0-2 --hook resid,mlp` on the command
line; resuming a multi-hook pass finishes every store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from autointerp.errors import BadInputError
from autointerp.harvest.hooks import capture_many, find_blocks
from autointerp.harvest.models import load_causal_lm, parse_hook
from autointerp.harvest.multihook import hook_points, parse_layers
from autointerp.harvest.run import HarvestConfig, harvest, harvest_many
from autointerp.harvest.store import SPLITS, ActivationStore
from tests.support.cli import run_main
from tests.support.models import FAMILIES, single_torch_thread

one_torch_thread = pytest.fixture(autouse=True)(single_torch_thread)
HOOKS = ("resid.0", "mlp.1", "attn.1", "resid.1")
VOLATILE = ("created", "last_run")
"""Metadata that records when and how fast, not what."""


def config(model: Path, corpus: Path, spec: str, out: Path, **extra) -> HarvestConfig:
    kind, _, layer = spec.partition(".")
    settings = {"n_tokens": 6000, "eval_fraction": 0.4, "fragment_len": 24, "batch_size": 5,
                "shard_tokens": 500, "device": "cpu", "dtype": "float32", **extra}
    return HarvestConfig(layer=int(layer), hook=kind, model=str(model), corpus=str(corpus),
                         out=out, **settings)


def assert_same_store(ours: Path, reference: Path) -> None:
    """Every file equal byte for byte (shards, tokens, offsets, markers, tokenizer) and the
    metadata equal but for when and how fast it was made."""
    files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file())
    assert any(f.suffix == ".npy" for f in files)
    for name in files:
        if name.name == "metadata.json":
            a, b = (json.loads((root / name).read_text()) for root in (ours, reference))
            for key in VOLATILE:
                a.pop(key), b.pop(key)
            assert a == b
        else:
            assert (ours / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.parametrize("family", FAMILIES)
def test_each_store_of_a_multi_hook_pass_equals_the_single_hook_store(tiny_models, corpus_file,
                                                                       tmp_path, family):
    model = tiny_models[family]
    many = [config(model, corpus_file, spec, tmp_path / "many" / spec) for spec in HOOKS]
    computed = []
    assert harvest_many(many, on_shard=lambda s, i: computed.append((s, i))) == [c.out for c in many]
    for spec, cfg in zip(HOOKS, many, strict=True):
        single = harvest(config(model, corpus_file, spec, tmp_path / "single" / spec))
        assert_same_store(cfg.out, single)
        store = ActivationStore(cfg.out)
        assert store.meta["hook"] == spec and store.n_eval_fragments > 3
    stores = [ActivationStore(c.out) for c in many]
    # Different hook points really hold different activations of the same tokens.
    assert not torch.equal(stores[0].train_sample(200), stores[3].train_sample(200))
    # on_shard is told of every shard of every store.
    assert len(computed) == sum(len(s.meta["shards"][split]) for s in stores for split in SPLITS)


def test_forward_stops_after_the_deepest_hooked_block(tiny_models):
    loaded = load_causal_lm(str(tiny_models["llama"]), device="cpu", dtype="float32")
    calls = [0] * loaded.n_layers
    blocks = find_blocks(loaded.model)
    handles = [b.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, b in enumerate(blocks)]
    ids = torch.tensor([[1, 5, 9, 12, 7, 3]])
    try:
        hooks = [parse_hook(s, loaded.n_layers) for s in ("mlp.1", "resid.0", "attn.1")]
        found = capture_many(loaded, hooks, ids)
    finally:
        for h in handles:
            h.remove()
    assert calls == [1, 0, 0]  # block 1's forward hook never completes: its MLP stopped it
    with torch.no_grad():
        hidden = loaded.model(ids, output_hidden_states=True).hidden_states
    assert torch.equal(found["resid.0"], hidden[1])
    assert set(found) == {"mlp.1", "resid.0", "attn.1"}


def test_layers_and_hook_lists():
    assert parse_layers("0-5") == [0, 1, 2, 3, 4, 5]
    assert parse_layers("4,0-2, 2") == [0, 1, 2, 4]
    assert hook_points("resid,mlp", [0, 2]) == [("resid", 0), ("resid", 2), ("mlp", 0), ("mlp", 2)]
    assert hook_points("resid.3,attn.0", []) == [("resid", 3), ("attn", 0)]
    for bad in ("5-2", "a", "1-"):
        with pytest.raises(BadInputError, match="--layers"):
            parse_layers(bad)
    with pytest.raises(BadInputError, match="needs --layer or --layers"):
        hook_points("mlp", [])


def test_cli_layers_write_one_store_per_hook_point_and_resume(tiny_models, corpus_file, tmp_path,
                                                             capsys):
    out = tmp_path / "stores"
    args = ["harvest", "--model", str(tiny_models["gpt2"]), "--layers", "0-2", "--hook",
            "resid,mlp", "--corpus", str(corpus_file), "--tokens", "800", "--device", "cpu",
            "--dtype", "float32", "--out", str(out)]
    code, _, err = run_main(args, capsys)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["mlp.0", "mlp.1", "mlp.2", "resid.0", "resid.1", "resid.2"]
    # Resume: one store is rolled back to incomplete with its shards gone; the rerun
    # recomputes it alone and it comes back equal to the others' pass.
    shutil.copytree(out / "mlp.1", tmp_path / "mlp.1.done")
    meta = json.loads((out / "mlp.1" / "metadata.json").read_text())
    meta["status"] = "incomplete"
    (out / "mlp.1" / "metadata.json").write_text(json.dumps(meta))
    for path in (out / "mlp.1").rglob("*.npy"):
        path.unlink()
    for path in (out / "mlp.1").glob("*/*.json"):
        path.unlink()
    untouched = (out / "resid.2" / "metadata.json").read_text()
    code, _, err = run_main(args, capsys)
    assert code == 0, err
    assert_same_store(out / "mlp.1", tmp_path / "mlp.1.done")
    assert (out / "resid.2" / "metadata.json").read_text() == untouched
    code, _, err = run_main(args[:-2] + ["--layer", "1"], capsys)
    assert code == 1 and "give --layer or --layers, not both" in err


def test_one_pass_configs_must_agree(tiny_models, corpus_file, tmp_path):
    a = config(tiny_models["gpt2"], corpus_file, "resid.0", tmp_path / "a")
    b = config(tiny_models["gpt2"], corpus_file, "resid.1", tmp_path / "b", n_tokens=900)
    with pytest.raises(BadInputError, match="differ only in hook point"):
        harvest_many([a, b])
    with pytest.raises(BadInputError, match="its own store folder"):
        harvest_many([a, config(tiny_models["gpt2"], corpus_file, "resid.1", tmp_path / "a")])
    assert not (tmp_path / "a").exists()
