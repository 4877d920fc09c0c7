"""Dead latents of the demo's TopK SAE: the library's defaults against the demo's
settings, trained on the same store and tokens in one run, timed in CPU seconds.

    python bench/sae_health.py STORE [--tokens 200000]

Prints one JSON line per setting: wall and CPU seconds, the dead share while training,
and FVU, L0 and dead fraction on the store's eval part.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from autointerp.demo import SAE_AUX_COEF, SAE_BATCH, SAE_DEAD_TOKENS
from autointerp.dictionaries.evaluate import evaluate
from autointerp.harvest.store import ActivationStore
from autointerp.sae.config import TrainConfig
from autointerp.sae.train import train_sae

SETTINGS = {
    "library defaults": {},
    "demo": {"batch_size": SAE_BATCH, "dead_tokens": SAE_DEAD_TOKENS, "aux_coef": SAE_AUX_COEF},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path, help="Activation store (the demo's: results/demo/stores/...).")
    ap.add_argument("--tokens", type=int, default=200_000, help="Training activations per SAE.")
    ap.add_argument("--ratio", type=int, default=2, help="SAE width as a multiple of d_model.")
    ap.add_argument("--k", type=int, default=32, help="Active latents per token.")
    args = ap.parse_args()
    store = ActivationStore(args.store)
    for name, extra in SETTINGS.items():
        cfg = TrainConfig(arch="topk", n_features=args.ratio * store.d_model, n_tokens=args.tokens,
                          k=args.k, seed=0, **extra)
        t0, c0 = time.perf_counter(), time.process_time()
        batches = store.train_batches(cfg.batch_size, cfg.n_tokens, seed=0)
        dictionary, summary = train_sae(batches, store.d_model, cfg, None, {}, "cpu", progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        m = evaluate(dictionary, store).as_dict()
        print(json.dumps({"setting": name, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                          "train_dead": round(summary.get("dead", float("nan")), 4),
                          "eval_fvu": round(m["fvu"], 4), "eval_l0": m["l0"],
                          "eval_dead_fraction": round(m["dead_fraction"], 4)}), flush=True)


if __name__ == "__main__":
    main()
