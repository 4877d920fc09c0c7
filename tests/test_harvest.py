"""Harvest: stored activations equal the model's own hidden states for three families, the
split is by document, resume skips finished shards, bad inputs fail cleanly, and the real
SmolLM2 harvest round-trips through ActivationStore."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.errors import BadInputError
from autointerp.harvest.corpus import open_corpus
from autointerp.harvest.models import load_causal_lm
from autointerp.harvest.run import HarvestConfig, harvest, is_eval_document, prefix_token_id
from autointerp.harvest.store import SPLITS, ActivationStore, from_storage
from tests.support.cli import run_main
from tests.support.models import FAMILIES, single_torch_thread

LAYER = 1
one_torch_thread = pytest.fixture(autouse=True)(single_torch_thread)


def read_sequences(store: Path, split: str) -> list[tuple[np.ndarray, torch.Tensor]]:
    """(token ids, activations) of every stored sequence, from the shard files and offsets."""
    meta = json.loads((store / "metadata.json").read_text())
    out = []
    for i in range(len(meta["shards"][split])):
        stem = store / split / f"{i:05d}"
        acts = from_storage(np.load(f"{stem}.acts.npy"), meta["store_dtype"])
        tokens, offsets = np.load(f"{stem}.tokens.npy"), np.load(f"{stem}.offsets.npy")
        out += [(tokens[a:b], acts[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_stored_activations_equal_output_hidden_states(tiny_models, corpus_file, tmp_path, family):
    cfg = HarvestConfig(out=tmp_path / "store", layer=LAYER, model=str(tiny_models[family]),
                        corpus=str(corpus_file), n_tokens=6000, eval_fraction=0.4,
                        fragment_len=24, batch_size=5, shard_tokens=700, device="cpu",
                        dtype="float32")
    harvest(cfg)
    meta = json.loads((cfg.out / "metadata.json").read_text())
    lm = load_causal_lm(cfg.model, device="cpu", dtype="float32")
    start = {"gpt2": "<|endoftext|>", "gpt_neox": "<|endoftext|>", "llama": "<s>"}[family]
    prefix = lm.tokenizer.convert_tokens_to_ids(start)
    assert meta["bos_token_id"] == prefix and meta["model_hash"] == lm.weights_hash
    stored = {split: read_sequences(cfg.out, split) for split in SPLITS}
    assert all(len(stored[s]) > 5 for s in SPLITS) and len(meta["shards"]["train"]) > 1
    n_stored = sum(len(t) for s in SPLITS for t, _ in stored[s])
    assert n_stored == meta["n_train_tokens"] + meta["n_eval_tokens"] and 6000 <= n_stored < 6024
    assert {len(t) for t, _ in stored["eval"]} == {24}  # eval keeps whole fragments only
    # The model's own forward pass, unpadded, on [BOS] + each stored sequence.
    for split in SPLITS:
        for tokens, acts in stored[split]:
            ids = torch.tensor([[prefix, *tokens.tolist()]])
            with torch.no_grad():
                expected = lm.model(ids, output_hidden_states=True).hidden_states[LAYER + 1][0, 1:]
            torch.testing.assert_close(acts, expected, rtol=2e-3, atol=2e-5)


def test_split_is_by_document_and_drops_broken_characters(tiny_models, corpus_file, tmp_path):
    cfg = HarvestConfig(out=tmp_path / "store", layer=0, model=str(tiny_models["llama"]),
                        corpus=str(corpus_file), n_tokens=100_000, eval_fraction=0.3,
                        fragment_len=16, device="cpu", dtype="float32")
    harvest(cfg)
    meta = json.loads((cfg.out / "metadata.json").read_text())
    assert meta["corpus_exhausted"] and meta["status"] == "complete"
    docs = list(open_corpus(cfg.corpus))
    tokenizer = ActivationStore(cfg.out).tokenizer()
    owners: dict[str, set[str]] = {s: set() for s in SPLITS}
    for split in SPLITS:
        for tokens, _ in read_sequences(cfg.out, split):
            text = tokenizer.decode(tokens)
            assert "\ufffd" not in text
            matches = [d.id for d in docs if text in d.text]
            assert matches, text  # every stored sequence is real text of the corpus
            if len(matches) == 1:
                owners[split].add(matches[0])
    assert owners["train"] and owners["eval"] and not owners["train"] & owners["eval"]
    assert all(is_eval_document(d, 0, 0.3) for d in owners["eval"])
    # The multi-byte characters of the corpus get cut at some fragment boundaries.
    assert sum(meta["dropped_fffd_fragments"].values()) > 0


def test_prefix_token_fallbacks(tiny_models):
    llama = load_causal_lm(str(tiny_models["llama"]), device="cpu").tokenizer
    assert prefix_token_id(llama) == llama.bos_token_id  # no <|endoftext|> in its vocabulary
    llama.bos_token = None
    assert prefix_token_id(llama) == llama.convert_tokens_to_ids("</s>")
    llama.eos_token = None
    with pytest.raises(BadInputError, match="neither a BOS nor an EOS"):
        prefix_token_id(llama)


class Interrupt(Exception):
    pass


def test_resume_skips_finished_shards(tiny_models, corpus_file, tmp_path):
    cfg = HarvestConfig(out=tmp_path / "store", layer=2, hook="mlp", model=str(tiny_models["gpt2"]),
                        corpus=str(corpus_file), n_tokens=5000, eval_fraction=0.3,
                        fragment_len=32, batch_size=4, shard_tokens=400, device="cpu",
                        dtype="float32")
    written: list[tuple[str, int]] = []

    def stop_after_three(split: str, index: int) -> None:
        written.append((split, index))
        if len(written) == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        harvest(cfg, on_shard=stop_after_three)
    with pytest.raises(BadInputError, match="incomplete"):
        ActivationStore(cfg.out)
    first = {(s, i): (cfg.out / s / f"{i:05d}.acts.npy").stat().st_mtime_ns for s, i in written}
    first_tokens = sum(json.loads((cfg.out / s / f"{i:05d}.json").read_text())["n_tokens"]
                       for s, i in written)

    rerun: list[tuple[str, int]] = []
    harvest(cfg, on_shard=lambda s, i: rerun.append((s, i)))
    assert rerun and not set(rerun) & set(written)
    assert all((cfg.out / s / f"{i:05d}.acts.npy").stat().st_mtime_ns == t for (s, i), t in first.items())
    meta = json.loads((cfg.out / "metadata.json").read_text())
    assert meta["last_run"]["computed_tokens"] == meta["n_train_tokens"] + meta["n_eval_tokens"] - first_tokens

    # Same store as an uninterrupted harvest.
    whole = harvest(HarvestConfig(**{**cfg.__dict__, "out": tmp_path / "whole"}))
    for split in SPLITS:
        a, b = read_sequences(cfg.out, split), read_sequences(whole, split)
        assert len(a) == len(b)
        for (ta, xa), (tb, xb) in zip(a, b, strict=True):
            assert np.array_equal(ta, tb)
            torch.testing.assert_close(xa, xb, rtol=2e-3, atol=2e-5)

    # A finished store is reused without loading the model.
    started = time.perf_counter()
    assert harvest(cfg) == cfg.out
    assert time.perf_counter() - started < 0.5
    assert json.loads((cfg.out / "metadata.json").read_text()) == meta


def test_random_init_harvest(tiny_models, corpus_file, tmp_path, capsys):
    common = ["harvest", "--model", str(tiny_models["gpt_neox"]), "--layer", "1", "--corpus",
              str(corpus_file), "--tokens", "500", "--device", "cpu"]
    assert run_main(common + ["--out", str(tmp_path / "trained")], capsys)[0] == 0
    assert run_main(common + ["--out", str(tmp_path / "random"), "--random-init", "7"], capsys)[0] == 0
    trained, random = (ActivationStore(tmp_path / n) for n in ("trained", "random"))
    assert random.meta["random_init"] == 7 and trained.meta["random_init"] is None
    assert random.meta["model_hash"] != trained.meta["model_hash"]
    x, y = trained.train_sample(400), random.train_sample(400)
    assert x.shape == y.shape and not torch.allclose(x, y, atol=1e-3)


def assert_one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 1, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and fragment in err, err


@pytest.mark.parametrize("case", ["layer out of range", "empty corpus", "non-UTF-8 corpus"])
def test_bad_inputs_leave_no_store(tiny_models, corpus_file, tmp_path, capsys, case):
    corpus, layer = str(corpus_file), "1"
    if case == "layer out of range":
        layer, fragment = "40", "layer 40 is out of range"
    elif case == "empty corpus":
        corpus, fragment = str(tmp_path / "empty.txt"), "is empty"
        Path(corpus).write_text("\n\n")
    else:
        corpus, fragment = str(tmp_path / "latin1.txt"), "latin1.txt is not UTF-8 text"
        Path(corpus).write_bytes("déjà vu\n".encode("latin-1"))
    out = tmp_path / "store"
    code, _, err = run_main(["harvest", "--model", str(tiny_models["llama"]), "--layer", layer,
                         "--corpus", corpus, "--tokens", "200", "--out", str(out)], capsys)
    assert_one_line_error(code, err, fragment)
    assert not out.exists()


def test_existing_store_with_other_arguments_is_refused(tiny_models, corpus_file, tmp_path, capsys):
    args = ["harvest", "--model", str(tiny_models["llama"]), "--corpus", str(corpus_file),
            "--tokens", "300", "--out", str(tmp_path / "store"), "--device", "cpu"]
    assert run_main(args + ["--layer", "0"], capsys)[0] == 0
    before = (tmp_path / "store" / "metadata.json").read_text()
    code, _, err = run_main(args + ["--layer", "1"], capsys)
    assert_one_line_error(code, err, "holds a store made with other arguments (different: layer)")
    assert (tmp_path / "store" / "metadata.json").read_text() == before
    assert run_main(args + ["--layer", "1", "--overwrite"], capsys)[0] == 0
    assert ActivationStore(tmp_path / "store").meta["hook"] == "resid.1"


def test_unknown_model_fails_in_a_real_process(tmp_path, corpus_file):
    res = subprocess.run(
        [str(Path(sys.executable).parent / "autointerp"), "harvest", "--model",
         "no-such-org/no-such-model-xyz", "--layer", "0", "--corpus", str(corpus_file),
         "--out", str(tmp_path / "store")], capture_output=True, text=True)
    assert_one_line_error(res.returncode, res.stderr, "cannot load model 'no-such-org/no-such-model-xyz'")
    assert not (tmp_path / "store").exists()


def test_fp16_overflow_is_refused_and_bfloat16_stores_it(tiny_models, corpus_file, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(1e6)  # resid.0 far beyond fp16's 65504
    model.save_pretrained(tmp_path / "huge")
    load_causal_lm(str(tiny_models["llama"])).tokenizer.save_pretrained(tmp_path / "huge")
    cfg = HarvestConfig(out=tmp_path / "store", layer=0, model=str(tmp_path / "huge"),
                        corpus=str(corpus_file), n_tokens=300, device="cpu", dtype="float32")
    with pytest.raises(BadInputError, match="overflow float16; harvest again with --store-dtype bfloat16"):
        harvest(cfg)
    assert not cfg.out.exists()
    harvest(HarvestConfig(**{**cfg.__dict__, "store_dtype": "bfloat16"}))
    x = ActivationStore(cfg.out).train_sample(100)
    assert torch.isfinite(x).all() and x.abs().max() > 65504  # beyond fp16


@pytest.mark.slow
def test_smollm2_builtin_harvest_round_trips(tmp_path):
    cfg = HarvestConfig(out=tmp_path / "store", layer=2, corpus="builtin", n_tokens=3000,
                        eval_fraction=0.5, batch_size=16, device="cpu")
    harvest(cfg)
    store = ActivationStore(cfg.out)
    assert store.d_model == 576 and store.meta["model"] == "smollm2-135m"
    assert store.n_train_tokens + store.n_eval_fragments * 64 >= 3000
    assert store.n_eval_fragments >= 3 and store.n_train_tokens >= 500
    batch = next(store.train_batches(batch_size=128))
    assert batch.shape == (128, 576) and torch.isfinite(batch).all()
    chunk = next(store.eval_chunks(max_fragments=4))
    assert chunk.tokens.shape == (4, 64) and chunk.acts.shape == (4, 64, 576)
    text = store.tokenizer().decode(chunk.tokens[0])
    assert len(text) > 100 and any(text in d.text for d in open_corpus("builtin"))
