"""The intervention score of a demo's dictionaries, after `autointerp demo` (which scores
simulation, detection and the output score): the same stores, dictionaries, labels,
sampled features and lexical explanations, scored by steering with SmolLM2 as scorer.

    autointerp demo --out OUT --llm none --n-features 4 --tokens 40000 \
        --train-tokens 200000 --n-fit 5000 --steer-prompts 8
    .venv/bin/python bench/output_run.py --out OUT --n-features 4 --tokens 40000 \
        --train-tokens 200000 --n-fit 5000 --steer-prompts 8
    autointerp compare --db OUT/autointerp.db --out OUT/compare

Reuses every store and dictionary the demo made (they are keyed by these settings).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


async def main() -> None:
    from autointerp.db import open_db
    from autointerp.demo import DemoConfig, build_dictionaries, harvest_stores
    from autointerp.scoring.fragments import FragmentConfig
    from autointerp.scoring.pipeline import ScoreConfig, score_dictionary_runs
    from autointerp.scoring.scorers.lexical import LexicalExplainer, LexicalSimulator
    from autointerp.scoring.steered import SteerSettings

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-features", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=80_000)
    ap.add_argument("--train-tokens", type=int, default=500_000)
    ap.add_argument("--n-fit", type=int, default=10_000)
    ap.add_argument("--steer-prompts", type=int, default=16)
    ap.add_argument("--selftest", action="store_true", help="run the intervention self-test")
    ap.add_argument("--no-random-rows", action="store_true",
                    help="skip the random-direction row (halves the steering work)")
    ap.add_argument("--no-random-model", action="store_true",
                    help="only the trained model's dictionaries (not the random-init SAE)")
    a = ap.parse_args()
    cfg = DemoConfig(out=a.out, llm=None, n_features=a.n_features, n_tokens=a.tokens,
                     train_tokens=a.train_tokens, n_fit=a.n_fit, steer_prompts=a.steer_prompts,
                     random_model=not a.no_random_model)
    db = open_db(cfg.db_path)
    fragments = FragmentConfig(n_features=cfg.n_features, seed=cfg.seed,
                               n_held_out=cfg.detection_examples)
    for d in build_dictionaries(cfg, harvest_stores(cfg)):
        score = ScoreConfig(d.path, fragments=fragments, label=d.label + " (lexical)",
                            scorers=("intervention",), selftest=a.selftest,
                            steering=SteerSettings(n_prompts=cfg.steer_prompts, seed=cfg.seed,
                                                   random_rows=not a.no_random_rows))
        for s in await score_dictionary_runs(score, LexicalExplainer(), LexicalSimulator(), db):
            print(f"{s.label} [{s.scorer}]: {s.mean:.4f} [{s.lo:.4f}, {s.hi:.4f}], "
                  f"{s.n_scored} scored, {s.n_failed} failed", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
