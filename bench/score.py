"""Scoring benchmark (not a test): prints figures measured in one run.

    python bench/score.py                              # SmolLM2 in process, 4 features
    python bench/score.py --n-features 150 --model PATH_OR_NAME

fresh   features scored per minute with the in-process backend (explainer and simulator
        share one model), and the harness overhead: (wall - time inside the model's
        forward passes) / wall, target <= 10%. The backend's read-out time (tokenizing,
        building logprob alternatives) is shown apart, as is the simulator self-test.
rerun   wall time of the identical rerun: every feature already scored, 0 LLM calls.
        In process, and as a fresh `autointerp score` process (target < 5 s at 150).
cache   wall time with the feature rows deleted, so every LLM call is a cache hit.

The store is a small SmolLM2 harvest of the builtin corpus (layer 3) and the dictionary
its PCA baseline (split into +/- features); both are kept in --work for the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from autointerp.baselines.directions import fit_baseline
from autointerp.db import open_db
from autointerp.dictionaries.sources import dictionary_id, load_dictionary
from autointerp.harvest.run import HarvestConfig, harvest
from autointerp.harvest.store import ActivationStore
from autointerp.llm.cache import CachedClient
from autointerp.llm.inprocess import TransformersClient
from autointerp.scoring.explain import LLMExplainer
from autointerp.scoring.fragments import FragmentConfig
from autointerp.scoring.pipeline import (
    NullProgress,
    ScoreConfig,
    fragment_set,
    score_dictionary_async,
)
from autointerp.scoring.scorers.simulation import LLMSimulator


def setup(work: Path, tokens: int) -> tuple[Path, Path]:
    store = harvest(HarvestConfig(layer=3, n_tokens=tokens, out=work / "store", eval_fraction=0.3))
    dict_path = work / "pca"
    if not (dict_path / "config.json").exists():
        x = ActivationStore(store).train_sample(20_000)
        fit_baseline("pca", x, meta={"store": str(store), "model": "smollm2-135m"}).save(dict_path)
    return store, dict_path


async def run(cfg: ScoreConfig, db, model: str, mode: str):
    inner = TransformersClient(model, device="cpu")
    client = CachedClient(inner, db)
    explainer, simulator = LLMExplainer(client), LLMSimulator(client, mode)
    t0 = time.perf_counter()
    await simulator.prepare()
    if cfg.selftest:
        from autointerp.scoring.selftest import selftest
        await selftest(simulator, db, store=ActivationStore(cfg.store))
    store = ActivationStore(cfg.store)
    fragment_set(db, load_dictionary(cfg.dictionary), dictionary_id(cfg.dictionary), store,
                 cfg.fragments, NullProgress())  # computed once, then read from the DB
    t_setup = time.perf_counter() - t0
    model_before = inner.stats.model_s
    backend_before = inner.stats.backend_s
    t1 = time.perf_counter()
    summary = await score_dictionary_async(cfg, explainer, simulator, db)
    wall = time.perf_counter() - t1
    return summary, wall, inner.stats.model_s - model_before, \
        inner.stats.backend_s - backend_before, t_setup, client


def cli_rerun(args, dict_path: Path, store: Path) -> tuple[float, float]:
    cmd = [sys.executable, "-c", "from autointerp.cli import main; main()", "score",
           "--dict", str(dict_path), "--acts", str(store), "--db", str(args.db),
           "--n-sampled", str(args.n_features), "--explainer-model", args.model,
           "--scoring-model", args.model, "--scoring-mode", args.mode, "--device", "cpu"]
    if not args.selftest:
        cmd.append("--no-selftest")
    t0, cpu0 = time.perf_counter(), _children_cpu()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "COLUMNS": "120"})
    return time.perf_counter() - t0, _children_cpu() - cpu0


def _children_cpu() -> float:
    """CPU seconds of finished child processes: on shared CPUs, wall time mostly waits."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("data/bench-score"))
    p.add_argument("--db", type=Path, default=None, help="default: WORK/bench.db, made afresh")
    p.add_argument("--tokens", type=int, default=60_000)
    p.add_argument("--n-features", type=int, default=4)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--mode", default="auto")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--selftest", action=argparse.BooleanOptionalAction, default=False)
    args = p.parse_args()
    store, dict_path = setup(args.work, args.tokens)
    if args.db is None:
        args.db = args.work / "bench.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{args.db}{suffix}").unlink(missing_ok=True)
    db = open_db(args.db)
    cfg = ScoreConfig(dict_path, store, FragmentConfig(n_features=args.n_features),
                      concurrency=args.concurrency, selftest=args.selftest)
    s, wall, model_s, backend_s, t_st, client = asyncio.run(run(cfg, db, args.model, args.mode))
    n = s.n_scored + s.n_failed
    print(f"model {args.model}, simulator {s.simulator_mode} ({s.notes}); {n} features "
          f"({s.n_scored} scored, {s.n_failed} failed {list(s.failures)}), mean score {s.mean:.3f}")
    print(f"probes, self-test, fragments: {t_st:.1f} s (not in the figures below)")
    print(f"fresh: wall {wall:.1f} s, {60 * n / wall:.2f} features/min, {client.calls} calls; "
          f"inside model forward passes {model_s:.1f} s, backend read-out {backend_s - model_s:.1f} s")
    print(f"fresh: harness overhead (wall - model) / wall = {(wall - model_s) / wall:.1%} "
          f"(target <= 10%); outside the backend entirely = {(wall - backend_s) / wall:.1%}")
    _, rerun, *_ , client2 = asyncio.run(run(cfg, db, args.model, args.mode))
    cli_wall, cli_cpu = cli_rerun(args, dict_path, store)
    print(f"rerun (all {n} features already scored): {rerun:.2f} s in process, "
          f"{client2.calls} LLM calls; fresh CLI process {cli_wall:.2f} s wall, {cli_cpu:.2f} s "
          f"CPU (target < 5 s); load average {os.getloadavg()[0]:.1f}")
    db.execute("delete from features")
    db.conn.commit()
    _, cached, *_, client3 = asyncio.run(run(cfg, db, args.model, args.mode))
    print(f"cache only (rows deleted): {cached:.2f} s, {client3.calls} LLM calls, "
          f"{client3.hits} cache hits")


if __name__ == "__main__":
    main()
