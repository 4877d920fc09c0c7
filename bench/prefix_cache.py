"""The demo's scoring step with and without the in-process prefix cache, in one run:
SmolLM2 in process explains and simulates the same features of a dictionary, from an
empty database each time (`prefix_cache=False` is the previous full-prompt path).

    python bench/prefix_cache.py DICT STORE [--n-features 3] [--order with,without]

Against an older checkout (one without the prefix cache, or any other), run the same
script with that checkout first on PYTHONPATH and `--order without`: its
TransformersClient then runs as it was.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import tempfile
import time
from pathlib import Path

from autointerp.db import open_db
from autointerp.llm.cache import CachedClient
from autointerp.llm.inprocess import TransformersClient
from autointerp.scoring.explain import LLMExplainer
from autointerp.scoring.fragments import FragmentConfig
from autointerp.scoring.pipeline import ScoreConfig, score_dictionary_async
from autointerp.scoring.scorers.simulation import LLMSimulator


async def score_once(cfg: ScoreConfig, inner: TransformersClient, db_path: Path) -> dict:
    client = CachedClient(inner, open_db(db_path))
    simulator = LLMSimulator(client)
    await simulator.prepare()
    t0, c0 = time.perf_counter(), time.process_time()
    s = await score_dictionary_async(cfg, LLMExplainer(client), simulator, client.db)
    prefixes = getattr(inner, "prefixes", None)  # None: no prefix cache, or an old checkout
    return {"code": str(Path(inspect.getfile(TransformersClient)).parents[2]),
            "prefix_cache": prefixes is not None, "features": s.n_scored + s.n_failed,
            "scored": s.n_scored, "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1), "model_s": round(inner.stats.model_s, 1),
            "calls": client.calls,
            **({"prefix_hits": prefixes.hits, "prefix_misses": prefixes.misses,
                "prefix_extended": prefixes.extended}
               if prefixes is not None else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dictionary", type=Path, help="Dictionary folder to score.")
    ap.add_argument("store", type=Path, help="Its activation store.")
    ap.add_argument("--n-features", type=int, default=3, help="Features scored each way.")
    ap.add_argument("--order", default="with,without", help="Which way runs first.")
    args = ap.parse_args()
    cfg = ScoreConfig(args.dictionary, args.store, FragmentConfig(n_features=args.n_features),
                      selftest=False)
    loaded = None
    with tempfile.TemporaryDirectory() as tmp:
        for way in args.order.split(","):
            has_cache = "prefix_cache" in inspect.signature(TransformersClient).parameters
            inner = TransformersClient("smollm2-135m", device="cpu", loaded=loaded,
                                       **({"prefix_cache": way == "with"} if has_cache else {}))
            inner._load()
            loaded = inner._lm  # one model for both ways: only the prefix cache differs
            print(json.dumps(asyncio.run(score_once(cfg, inner, Path(tmp) / f"{way}.db"))),
                  flush=True)
            inner.close()


if __name__ == "__main__":
    main()
