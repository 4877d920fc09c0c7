"""Data-parallel SAE training: 2 ranks on CPU (gloo) with global batch B
train the SAE that one process trains with batch B: the replicas are identical, equal to the
one-process weights within 1e-5, with the same dead-latent counters; the saved dictionary
records the world size; a killed `torchrun` training resumes to the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.dictionaries.sources import load_dictionary
from autointerp.distributed import current_world
from autointerp.harvest.store import ActivationStore
from autointerp.sae.config import TrainConfig
from autointerp.sae.run import train_from_store
from autointerp.sae.toy import planted_features
from autointerp.sae.train import CHECKPOINT_NAME, fit, make_trainer
from tests.support.cli import REPO, cli_env, wait_for
from tests.support.data import make_store
from tests.support.models import single_torch_thread
from tests.support.ranks import spawn

one_torch_thread = pytest.fixture(autouse=True)(single_torch_thread)
D_MODEL, N_FEATURES, BATCH, STEPS = 16, 96, 64, 40
COMMON = {"n_features": N_FEATURES, "n_tokens": BATCH * STEPS, "batch_size": BATCH,
          "dead_tokens": BATCH * 3}
# Settings under which latents die during the run (checked below), so that the dead-latent
# counters, and for topk the AuxK loss on dead latents, are exercised.
CONFIGS = {
    "tied": TrainConfig(arch="tied", lr=1e-2, l1=3.0, **COMMON),
    "relu": TrainConfig(arch="relu", lr=1e-2, l1=3.0, **COMMON),
    "topk": TrainConfig(arch="topk", lr=3e-3, k=2, **COMMON),
}


def batches() -> list[torch.Tensor]:
    """Planted sparse features around an offset mean, so the decoder-bias and scale
    initialisation matter."""
    toy = planted_features(n_true=64, d_model=D_MODEL, p_active=0.05, seed=3)
    offset = torch.linspace(-2, 3, D_MODEL)
    return [b * 4 + offset for b in toy.batches(BATCH, STEPS, seed=5)]


def _train_on_ranks(out: str) -> None:
    world = current_world()
    for arch, config in CONFIGS.items():
        trainer = make_trainer(D_MODEL, config, "cpu", world)
        summary = fit(trainer, batches(), progress=False)
        torch.save({"sae": trainer.sae.state_dict(), "since_fired": trainer.since_fired,
                    "scale": trainer.scale, "summary": summary,
                    "training": trainer.training_record()}, Path(out) / f"{arch}.{world.rank}.pt")


def test_two_ranks_train_the_one_process_sae(tmp_path):
    spawn(_train_on_ranks, str(tmp_path))
    for arch, config in CONFIGS.items():
        one = make_trainer(D_MODEL, config, "cpu")
        summary = fit(one, batches(), progress=False)
        r0, r1 = (torch.load(tmp_path / f"{arch}.{r}.pt", weights_only=True) for r in (0, 1))
        assert r0["training"] == {"world_size": 2, "backend": "gloo", "device": "cpu"}
        for name, tensor in one.sae.state_dict().items():
            assert torch.equal(r0["sae"][name], r1["sae"][name]), (arch, name)  # replicas equal
            torch.testing.assert_close(r0["sae"][name], tensor, rtol=0, atol=1e-5, msg=f"{arch} {name}")
        decoder = r0["sae"]["W_enc" if arch == "tied" else "W_dec"]
        torch.testing.assert_close(decoder.norm(dim=1), torch.ones(N_FEATURES))
        assert torch.equal(r0["since_fired"], one.since_fired) and torch.equal(r1["since_fired"], one.since_fired)
        assert r0["scale"] == pytest.approx(one.scale, rel=1e-6)
        for key, value in summary.items():
            assert r0["summary"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), (arch, key)
        assert 0 < summary["dead"] < 1, (arch, summary)


def torchrun(args: list[str], nproc: int = 2) -> list[str]:
    """`torchrun --standalone --nproc_per_node N -m autointerp ...`, with this interpreter
    (the module form of torchrun: no reliance on a console script's shebang)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "autointerp", *map(str, args)]


def small_store(path: Path, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(64 * 300, D_MODEL, generator=g) * torch.linspace(0.5, 2, D_MODEL) + 1
    evals = torch.randn(64 * 10, D_MODEL, generator=g)
    return make_store(path, train, evals, np.zeros(640, np.int32))


RESUME_STEPS, RESUME_EVERY = 300, 20


def train_args(store: Path, out: Path) -> list[str]:
    return ["train", "--acts", store, "--arch", "topk", "--k", "4", "--ratio", "4", "--device",
            "cpu", "--batch-size", BATCH, "--tokens", BATCH * RESUME_STEPS,
            "--checkpoint-every", RESUME_EVERY, "--out", out]


def test_killed_two_rank_training_resumes_to_the_same_result(tmp_path):
    store = small_store(tmp_path / "store")
    reference = tmp_path / "reference"
    done = subprocess.run(torchrun(train_args(store, reference)), env=cli_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("features x d_model") == 1  # rank 0 alone prints the result

    out = tmp_path / "killed"
    proc = subprocess.Popen(torchrun(train_args(store, out)), env=cli_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert wait_for(lambda: (out / CHECKPOINT_NAME).exists(), 120, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, at once
        proc.wait()
    state = torch.load(out / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    assert 0 < state["step"] < RESUME_STEPS and not (out / "config.json").exists()

    resumed = subprocess.run(torchrun(train_args(store, out)), env=cli_env(), cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ours, theirs = load_dictionary(out), load_dictionary(reference)
    for name, tensor in theirs.tensors().items():
        torch.testing.assert_close(ours.tensors()[name], tensor, rtol=0, atol=0, msg=name)
    assert ours.meta == theirs.meta and ours.meta["training"]["world_size"] == 2
    # And both equal one process training on the same global batches, within 1e-5.
    one, _ = train_from_store(ActivationStore(store), tmp_path / "one",
                              TrainConfig(**ours.meta["hyperparameters"]), "cpu", progress=False)
    for name, tensor in one.tensors().items():
        torch.testing.assert_close(ours.tensors()[name], tensor, rtol=0, atol=1e-5, msg=name)


def _spread_on_ranks(stores: list[str], root: str) -> None:
    """train_spread on this rank, logging which store each rank trains."""
    import autointerp.sae.run as run

    rank, real = current_world().rank, run.train_from_store

    def logged(store, out, *args, **kwargs):
        with open(Path(root) / "log", "a") as f:
            f.write(f"{rank} {Path(out).name}\n")
        return real(store, out, *args, **kwargs)

    run.train_from_store = logged
    jobs = [(ActivationStore(s), Path(root) / Path(s).name, CONFIGS["topk"]) for s in stores]
    results = run.train_spread(jobs, "cpu", progress=False)
    assert [d.meta["store"] for d, _ in results] == [str(Path(s).resolve()) for s in stores]


def test_several_stores_train_one_sae_per_rank(tmp_path):
    stores = [small_store(tmp_path / "a"), small_store(tmp_path / "b", seed=1), small_store(tmp_path / "c", seed=2)]
    spawn(_spread_on_ranks, [str(s) for s in stores], str(tmp_path))
    log = sorted((tmp_path / "log").read_text().split("\n")[:-1])
    assert log == ["0 a", "0 c", "1 b"]  # store i on rank i mod 2, each trained once
    for store in stores:
        ours = load_dictionary(tmp_path / store.name)
        one, _ = train_from_store(ActivationStore(store), tmp_path / "one" / store.name,
                                  CONFIGS["topk"], "cpu", progress=False)
        for name, tensor in one.tensors().items():  # trained alone: the one-process SAE exactly
            assert torch.equal(ours.tensors()[name], tensor), name
        assert ours.meta["training"]["world_size"] == 1
