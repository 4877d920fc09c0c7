"""Temporary files of a killed run. Every shard, checkpoint and
dictionary file is written as `.NAME.tmpPID` and renamed into place when whole, so a
SIGKILL during a write leaves that hidden file behind: never read, but for a real model
tens of MB. A resumed harvest or train deletes the ones in its own output folder whose
process is gone, and leaves alone those of a process still running (a concurrent run)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from autointerp.dictionaries.sources import load_dictionary
from autointerp.harvest.run import HarvestConfig, harvest
from autointerp.harvest.store import ActivationStore, remove_stale_temp_files
from autointerp.sae.config import TrainConfig
from autointerp.sae.run import train_from_store
from tests.support.models import build_tiny, corpus_text, single_torch_thread

one_torch_thread = pytest.fixture(autouse=True)(single_torch_thread)


class Interrupt(Exception):
    """Stands in for a kill between two shards."""


@pytest.fixture(scope="module")
def pids():
    """(dead, live): the PID of a process that has exited, and of one still running."""
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    live = subprocess.Popen(["sleep", "120"])
    yield dead.pid, live.pid
    live.kill()
    live.wait()


def plant(folder: Path, name: str, pid: int) -> Path:
    """A half-written file as process `pid` would have left it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.tmp{pid}"
    path.write_bytes(b"\x93NUMPY half a shard")
    return path


def test_only_files_of_dead_writers_are_removed(tmp_path, pids):
    dead, live = pids
    stale = plant(tmp_path, "00000.acts.npy", dead)
    kept = [plant(tmp_path, "00001.acts.npy", live), plant(tmp_path, "metadata.json", os.getpid()),
            plant(tmp_path / "train", "00000.json", dead)]  # another folder: not ours to clean
    for name in ("00000.acts.npy", ".notes.tmpx", ".tmp123"):
        (tmp_path / name).write_text("not a temporary file of ours")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and all(p.exists() for p in kept)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
        [f".00001.acts.npy.tmp{live}", f".metadata.json.tmp{os.getpid()}", ".notes.tmpx",
         ".tmp123", "00000.acts.npy"])
    assert remove_stale_temp_files(tmp_path / "missing") == []


@pytest.fixture(scope="module")
def model_and_corpus(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tempfiles")
    corpus = root / "corpus.txt"
    corpus.write_text(corpus_text(0), encoding="utf-8")
    return build_tiny("gpt2", root / "gpt2"), corpus


def test_resumed_harvest_and_train_remove_stale_temp_files(model_and_corpus, tmp_path, pids):
    model, corpus = model_and_corpus
    dead, live = pids
    cfg = HarvestConfig(out=tmp_path / "store", layer=1, model=str(model), corpus=str(corpus),
                        n_tokens=8000, eval_fraction=0.5, fragment_len=32, batch_size=8,
                        shard_tokens=1000, device="cpu", dtype="float32")

    written = []

    def stop_after_two(split: str, index: int) -> None:
        written.append((split, index))
        if len(written) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        harvest(cfg, on_shard=stop_after_two)
    stale = [plant(cfg.out, "metadata.json", dead), plant(cfg.out / "train", "00007.acts.npy", dead),
             plant(cfg.out / "eval", "00003.offsets.npy", dead)]
    concurrent = plant(cfg.out / "train", "00009.acts.npy", live)
    harvest(cfg)
    assert ActivationStore(cfg.out).n_eval_fragments > 0
    assert not any(p.exists() for p in stale) and concurrent.exists()

    out = tmp_path / "sae"
    stale = [plant(out, "checkpoint.pt", dead), plant(out, "dictionary.safetensors", dead)]
    concurrent = plant(out, "config.json", live)
    train_from_store(ActivationStore(cfg.out), out, TrainConfig(
        arch="relu", n_features=16, n_tokens=64 * 10, batch_size=64), device="cpu", progress=False)
    assert load_dictionary(out).n_features == 16
    assert not any(p.exists() for p in stale) and concurrent.exists()
