"""Data-parallel harvest: 2 ranks (gloo, one thread each) harvest two hook
points in one pass, each rank its own contiguous share of the documents into its own shards.
The union reads as one store equal, bit for bit, to a one-process harvest of the same
documents: the same token ids, activations and eval fragment boundaries in the same order
(the store's read order is rank 0's shards, then rank 1's: the document order), the same
counts. A rank killed mid-harvest resumes from its own shards; a store started by 2 ranks is
finished by 2 ranks or replaced with --overwrite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.multiprocessing import ProcessRaisedException

from autointerp.distributed import current_world
from autointerp.errors import BadInputError
from autointerp.harvest.run import HarvestConfig, harvest, harvest_many
from autointerp.harvest.store import SPLITS, ActivationStore, from_storage
from tests.support.cli import REPO, cli_env
from tests.support.models import corpus_text, single_torch_thread, tiny_model_dirs
from tests.support.ranks import spawn

one_torch_thread = pytest.fixture(autouse=True)(single_torch_thread)
HOOKS = ("resid.1", "mlp.0")
WHEN_AND_HOW = ("created", "last_run", "shards", "world_size")
"""Metadata that says when, how fast and by how many processes, not what is stored."""


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    model = tiny_model_dirs(tmp_path_factory)["gpt2"]
    corpus = tmp_path_factory.mktemp("corpus") / "text.txt"
    corpus.write_text(corpus_text(0), encoding="utf-8")
    return model, corpus


def configs(model: Path, corpus: Path, root: Path, **extra) -> list[HarvestConfig]:
    settings = {"n_tokens": 6000, "eval_fraction": 0.4, "fragment_len": 24, "batch_size": 8,
                "shard_tokens": 500, "device": "cpu", "dtype": "float32", **extra}
    return [HarvestConfig(layer=int(spec.split(".")[1]), hook=spec.split(".")[0], model=str(model),
                          corpus=str(corpus), out=root / spec, **settings) for spec in HOOKS]


def _harvest_on_ranks(cfgs: list[HarvestConfig], stop_rank: int | None) -> None:
    """Every rank harvests; `stop_rank` dies (an uncaught exception) after its first shard."""
    rank = current_world().rank

    def on_shard(split: str, index: int) -> None:
        if rank == stop_rank:
            raise Interrupt(f"rank {rank} stops after {split} shard {index}")

    harvest_many(cfgs, on_shard=on_shard)


def stream(store: Path, split: str) -> tuple[np.ndarray, torch.Tensor, list[int]]:
    """(token ids, activations, sequence boundaries) of a split in the store's read order."""
    meta = json.loads((store / "metadata.json").read_text())
    tokens, acts, bounds = [], [], [0]
    for i, info in enumerate(meta["shards"][split]):
        stem = store / split / info.get("stem", f"{i:05d}")
        tokens.append(np.load(f"{stem}.tokens.npy"))
        acts.append(from_storage(np.load(f"{stem}.acts.npy"), meta["store_dtype"]))
        offsets = np.load(f"{stem}.offsets.npy")
        bounds += [bounds[-1] + int(o) for o in offsets[1:]]
        assert bounds[-1] - bounds[-1 - (len(offsets) - 1)] == len(tokens[-1])
    assert tokens, f"{store} has no {split} shards"
    return np.concatenate(tokens), torch.cat(acts), bounds


def eval_fragments(store: ActivationStore) -> tuple[np.ndarray, torch.Tensor]:
    """Every eval fragment as scoring reads them, numbered 0, 1, ... in order (chunks end at
    shard ends, so their sizes follow the shard boundaries; the fragments do not)."""
    chunks = list(store.eval_chunks(max_fragments=7))
    starts = np.cumsum([0] + [len(c.tokens) for c in chunks[:-1]])
    assert [c.first_fragment for c in chunks] == starts.tolist()
    return np.concatenate([c.tokens for c in chunks]), torch.cat([c.acts for c in chunks])


def assert_union_equals(ranked: Path, single: Path) -> None:
    a, b = (json.loads((p / "metadata.json").read_text()) for p in (ranked, single))
    assert a["world_size"] == 2 and b["world_size"] == 1 and a["status"] == "complete"
    assert {i["rank"] for s in SPLITS for i in a["shards"][s]} == {0, 1}
    for split in SPLITS:
        ranks = [i["rank"] for i in a["shards"][split]]
        assert ranks == sorted(ranks)  # the read order: rank 0's shards, then rank 1's
        ta, xa, ba = stream(ranked, split)
        tb, xb, bb = stream(single, split)
        assert np.array_equal(ta, tb) and ba == bb, split
        assert torch.equal(xa, xb), split  # bit for bit
    for key in WHEN_AND_HOW:
        a.pop(key), b.pop(key)
    assert a == b
    ours, theirs = ActivationStore(ranked), ActivationStore(single)
    assert ours.n_train_tokens == theirs.n_train_tokens > 0
    assert ours.n_eval_fragments == theirs.n_eval_fragments > 0
    (tokens_a, acts_a), (tokens_b, acts_b) = (eval_fragments(s) for s in (ours, theirs))
    assert np.array_equal(tokens_a, tokens_b) and torch.equal(acts_a, acts_b)
    assert torch.equal(ours.train_sample(500, seed=3), theirs.train_sample(500, seed=3))


def test_killed_rank_resumes_and_the_union_equals_one_process(setup, tmp_path):
    model, corpus = setup
    ranked = configs(model, corpus, tmp_path / "ranked")
    with pytest.raises(ProcessRaisedException, match="rank 1 stops after"):
        spawn(_harvest_on_ranks, ranked, 1)
    meta = json.loads((ranked[0].out / "metadata.json").read_text())
    assert meta["status"] == "incomplete" and meta["world_size"] == 2
    first = {p: p.stat().st_mtime_ns for c in ranked for p in c.out.glob("*/rank001/*.acts.npy")}
    assert first  # rank 1 wrote a shard before it died

    # A store begun by 2 ranks cannot be finished by 1: each rank's share depends on it.
    with pytest.raises(BadInputError, match="started by 2 process"):
        harvest(ranked[0])

    spawn(_harvest_on_ranks, ranked, None)
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # rank 1 resumed, kept them
    single = configs(model, corpus, tmp_path / "single")
    harvest_many(single)
    for r, s in zip(ranked, single, strict=True):
        assert_union_equals(r.out, s.out)
    # Complete, a 2-rank store is reused by one process as it is, and --overwrite replaces it.
    before = (ranked[0].out / "metadata.json").read_text()
    assert harvest(ranked[0]) == ranked[0].out
    assert (ranked[0].out / "metadata.json").read_text() == before
    harvest(HarvestConfig(**{**ranked[1].__dict__, "overwrite": True}))
    assert not list(ranked[1].out.glob("*/rank*")) and ActivationStore(ranked[1].out).meta["world_size"] == 1


def test_torchrun_harvest_command_writes_the_one_process_stores(setup, tmp_path):
    """The user's command: `torchrun --standalone --nproc_per_node 2 -m autointerp harvest
    --layers 0-1 ... --overwrite` (module form of torchrun, this interpreter)."""
    model, corpus = setup
    # An older store made otherwise sits where one of the new stores goes: --overwrite
    # (rank 0 removes it before any rank writes) replaces it.
    old = harvest(HarvestConfig(layer=0, model=str(model), corpus=str(corpus), n_tokens=900,
                                device="cpu", out=tmp_path / "ranked" / "resid.0"))
    assert ActivationStore(old).meta["n_tokens_requested"] == 900
    args = ["harvest", "--model", model, "--layers", "0-1", "--hook", "resid,attn", "--corpus", corpus,
            "--tokens", 6000, "--eval-fraction", 0.7, "--device", "cpu", "--dtype", "float32"]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "-m", "autointerp", *map(str, args), "--overwrite",
                          "--out", str(tmp_path / "ranked")],
                         env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("activation store:") == 4  # rank 0 alone reports the 4 stores
    assert not list(old.glob("*/0*")) and list(old.glob("*/rank001/*.npy"))  # old shards gone
    single = [HarvestConfig(layer=layer, hook=kind, model=str(model), corpus=str(corpus),
                            n_tokens=6000, eval_fraction=0.7, device="cpu", dtype="float32",
                            out=tmp_path / "single" / f"{kind}.{layer}")
              for kind in ("resid", "attn") for layer in (0, 1)]
    harvest_many(single)
    for cfg in single:
        assert_union_equals(tmp_path / "ranked" / cfg.out.name, cfg.out)


@pytest.mark.slow
def test_smollm2_two_rank_harvest_equals_one_process(tmp_path):
    """The offline default model in its default dtype (bf16 on CPUs with native bf16): the
    union of a 2-rank torchrun harvest of four hook points is the one-process harvest."""
    args = ["harvest", "--layers", "0-1", "--hook", "resid,mlp", "--tokens", 2000,
            "--eval-fraction", 0.3, "--device", "cpu"]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "-m", "autointerp", *map(str, args),
                          "--out", str(tmp_path / "ranked")],
                         env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    single = [HarvestConfig(layer=layer, hook=kind, n_tokens=2000, eval_fraction=0.3, device="cpu",
                            out=tmp_path / "single" / f"{kind}.{layer}")
              for kind in ("resid", "mlp") for layer in (0, 1)]
    harvest_many(single)
    for cfg in single:
        assert_union_equals(tmp_path / "ranked" / cfg.out.name, cfg.out)
