"""The GPU check: one JSON of figures, measured in one run.

    bash bench/gpu.sh                 # on a GPU: about 8 minutes on one H100-class card
    bash bench/gpu.sh --smoke         # anywhere, on CPU, tiny sizes (the test suite runs it)

harvest   harvest tokens/s (the real loop: tokenize, forward, copy, write shards) over a
          bare forward pass to the same hook on the same prebuilt batches (target >= 0.85).
train     TopK SAE training tokens/s for d_model 512 and 576 with 16,384 features, and
          the share of the matrix-product floor: the step's five products alone, in
          bf16 on CUDA (what autocast uses), timed on the same shapes in the same run.
score     in-process explainer + simulator features per minute (SmolLM2-135M) on the
          harvested store's PCA features, self-test off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


@dataclass(frozen=True)
class Sizes:
    model: str
    layer: int
    tokens: int
    batch: int
    widths: tuple[tuple[int, int], ...]
    """(d_model, n_features) of the SAEs timed."""
    train_batch: int
    reps: int
    n_features: int


FULL = Sizes("smollm2-135m", 15, 200_000, 64, ((512, 16_384), (576, 16_384)), 4096, 20, 16)
SMOKE = Sizes("", 1, 8_000, 8, ((32, 64), (36, 64)), 256, 3, 2)


def harvest_ratio(sizes: Sizes, corpus: str, device: str, work: Path) -> dict:
    from harvest import bare_tokens_per_second, prebuilt_batches

    from autointerp.harvest.models import load_causal_lm, parse_hook
    from autointerp.harvest.run import HarvestConfig, harvest

    cfg = HarvestConfig(model=sizes.model, layer=sizes.layer, corpus=corpus, out=work / "store",
                        n_tokens=sizes.tokens, batch_size=sizes.batch, device=device,
                        eval_fraction=0.5)
    lm = load_causal_lm(cfg.model, cfg.device, cfg.dtype)
    hook = parse_hook(cfg.hook_spec, lm.n_layers, cfg.model)
    batches, n_tokens = prebuilt_batches(lm, cfg)
    bare_tokens_per_second(lm, hook, batches[:2], 1)  # warm-up
    bare = bare_tokens_per_second(lm, hook, batches, n_tokens)[0]
    harvest(cfg)
    run = json.loads((cfg.out / "metadata.json").read_text())["last_run"]
    return {"store": cfg.out, "bare_tokens_per_s": round(bare),
            "harvest_tokens_per_s": round(run["tokens_per_second"]),
            "ratio": round(run["tokens_per_second"] / bare, 3)}


def train_speed(d_model: int, n_features: int, batch: int, device: str, reps: int) -> dict:
    from train import floor_step, time_once

    from autointerp.sae.config import TrainConfig
    from autointerp.sae.train import Trainer

    cfg = TrainConfig(arch="topk", n_features=n_features, n_tokens=batch * 10**6, batch_size=batch)
    trainer = Trainer(d_model, cfg, device)
    dev = trainer.device
    x = torch.randn(batch, d_model, device=dev)
    trainer.init_from(x)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    floor = floor_step(*(t.to(dtype) for t in (x, trainer.sae.W_enc.detach(),
                                               trainer.sae.decoder.detach())))
    floor(), trainer.step(x)  # warm-up
    pairs = [(time_once(floor, dev), time_once(lambda: trainer.step(x), dev)) for _ in range(reps)]
    t_floor = statistics.median(f for f, _ in pairs)
    t_step = statistics.median(t for _, t in pairs)
    return {"d_model": d_model, "n_features": n_features, "batch": batch,
            "floor_dtype": str(dtype).removeprefix("torch."),
            "train_tokens_per_s": round(batch / t_step),
            "floor_tokens_per_s": round(batch / t_floor),
            "floor_share": round(statistics.median(f / t for f, t in pairs), 3)}


async def _score(store: Path, model: str, device: str, n_features: int, work: Path) -> dict:
    from autointerp.baselines.directions import fit_baseline
    from autointerp.db import open_db
    from autointerp.harvest.store import ActivationStore
    from autointerp.llm.cache import CachedClient
    from autointerp.llm.inprocess import TransformersClient
    from autointerp.scoring.explain import LLMExplainer
    from autointerp.scoring.fragments import FragmentConfig
    from autointerp.scoring.pipeline import ScoreConfig, score_dictionary_async
    from autointerp.scoring.scorers.simulation import LLMSimulator

    acts = ActivationStore(store)
    pca = fit_baseline("pca", acts.train_sample(2_000), meta={"store": str(store)}).save(work / "pca")
    inner = TransformersClient(model, device=device)
    client = CachedClient(inner, open_db(work / "score.db"))
    simulator = LLMSimulator(client)
    await simulator.prepare()
    t0 = time.perf_counter()
    s = await score_dictionary_async(
        ScoreConfig(pca, store, FragmentConfig(n_features=n_features), selftest=False),
        LLMExplainer(client), simulator, client.db)
    wall = time.perf_counter() - t0
    inner.close()
    n = s.n_scored + s.n_failed
    return {"features": n, "scored": s.n_scored, "wall_s": round(wall, 1),
            "features_per_minute": round(60 * n / wall, 2), "calls": client.calls,
            "prefix_cache_hits": inner.prefixes.hits, "simulator_mode": s.simulator_mode}


def smoke_model(work: Path) -> tuple[str, str]:
    """A tiny random Llama with a chat template and a small corpus file (CPU, offline)."""
    from tests.support.models import build_tiny_llama, corpus_text

    corpus = work / "corpus.txt"
    corpus.write_text(corpus_text(0, 40))
    return str(build_tiny_llama(work / "tiny-llama")), str(corpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the script runs.")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="The JSON of figures.")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda.")
    args = ap.parse_args()
    device = "cpu" if args.smoke else args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sizes, corpus = FULL, "builtin"
        if args.smoke:
            model, corpus = smoke_model(work)
            sizes = Sizes(**{**SMOKE.__dict__, "model": model})
        t0 = time.perf_counter()
        harvest = harvest_ratio(sizes, corpus, device, work)
        train = [train_speed(d, f, sizes.train_batch, device, sizes.reps) for d, f in sizes.widths]
        score = asyncio.run(_score(harvest.pop("store"), sizes.model, device, sizes.n_features, work))
    figures = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
               "smoke": args.smoke, "torch": torch.__version__, "harvest": harvest,
               "train": train, "score": score, "total_s": round(time.perf_counter() - t0, 1)}
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
