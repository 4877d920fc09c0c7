"""Harness throughput: features per hour of the `score` path alone.

    python bench/throughput.py                     # 200 features, concurrency 64, 1 and 2 workers
    python bench/throughput.py --n-features 400 --concurrency 128 --workers 4

An instant OpenAI-compatible server (bench/instant_server.py, vLLM's dialect) runs in
its own process on 127.0.0.1; each scorer is run as a fresh `autointerp score`
process against it, exactly as a user would run it against vLLM, so the figure is
what the harness can push when the endpoint costs nothing. Printed per scorer and
number of `--workers` (score processes; the harness's CPU seconds include theirs):

fresh   features/hour of the whole command (start-up, explain, every scorer call,
        cache writes, results), the fragment sets precomputed once beforehand (their
        one-off cost per dictionary is printed apart); the harness's CPU seconds per
        feature; calls per feature and the server's own CPU share.
rerun   wall time of the identical rerun in a fresh process (every feature done).
cached  wall time of a fresh process whose every LLM call is a cache hit (feature rows
        deleted): the cache-only rerun (target < 5 s).

The store is a small SmolLM2 harvest of the builtin corpus and the dictionary a TopK SAE
trained on it (sparse, so detection has silent fragments); both are kept in --work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SCORERS: dict[str, list[str]] = {
    name: ["--scoring-backend", "openai", "--scoring-mode", "auto", "--scorer", name]
    for name in ("simulation", "detection", "fuzzing")
}
HERE = Path(__file__).resolve().parent


def setup(work: Path, tokens: int, n_features: int) -> tuple[Path, Path, Path, float]:
    """Store, PCA dictionary, and a database holding only the fragment set (timed)."""
    from autointerp.db import open_db
    from autointerp.dictionaries.sources import dictionary_id, load_dictionary
    from autointerp.harvest.run import HarvestConfig, harvest
    from autointerp.harvest.store import ActivationStore
    from autointerp.scoring.fragments import FragmentConfig
    from autointerp.scoring.pipeline import NullProgress, fragment_set

    store = harvest(HarvestConfig(layer=3, n_tokens=tokens, out=work / "store", eval_fraction=0.5))
    # A sparse dictionary: detection needs fragments where a feature is silent, which
    # a dense PCA direction never has (it fails every feature with that reason).
    dict_path = work / "topk"
    if not (dict_path / "config.json").exists():
        subprocess.run([str(Path(sys.executable).parent / "autointerp"), "train", "--acts",
                        str(store), "--arch", "topk", "--k", "16", "--ratio", "4", "--tokens",
                        "200000", "--out", str(dict_path)], check=True, stdout=subprocess.DEVNULL)
    template = work / f"fragments-{n_features}.db"
    t0 = time.perf_counter()
    fs = fragment_set(open_db(template), load_dictionary(dict_path), dictionary_id(dict_path),
                      ActivationStore(store), FragmentConfig(n_features=n_features, seed=0),
                      NullProgress())
    if len(fs.features) < n_features:
        sys.exit(f"only {len(fs.features)} eligible features; raise --tokens")
    return store, dict_path, template, time.perf_counter() - t0


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(HERE / "instant_server.py")],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def server_stats(url: str) -> dict:
    with urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/stats") as r:
        return json.loads(r.read())


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of a child process (it must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_scorer(name: str, args, store: Path, dict_path: Path, template: Path, url: str,
               workers: int) -> dict:
    db = args.work / f"run-{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    # SQLite's backup, not a file copy: the template's fragment set may still sit in its
    # write-ahead log right after setup made it, and a copy of the main file alone would
    # leave every run to sample the fragments again (and time that too).
    src, dst = sqlite3.connect(template), sqlite3.connect(db)
    src.backup(dst)
    src.close(), dst.close()
    cmd = [str(Path(sys.executable).parent / "autointerp"), "score", "--dict", str(dict_path),
           "--acts", str(store), "--db", str(db), "--n-sampled", str(args.n_features),
           "--explainer", "openai", "--explainer-model", "instant", "--scoring-model", "instant",
           "--base-url", url, "--concurrency", str(args.concurrency), "--no-selftest",
           "--workers", str(workers), *SCORERS[name]]
    s0 = server_stats(url)
    wall, cpu = timed(cmd)
    s1 = server_stats(url)
    from autointerp.db import open_db

    status = dict(open_db(db).execute(
        "select status, count(*) from features group by status").fetchall())
    rerun, _ = timed(cmd)
    open_db(db).execute("delete from features")
    cached, _ = timed(cmd)
    floor = json_floor(db)
    calls = s1["requests"] - s0["requests"]
    n = args.n_features
    return {"scorer": name, "workers": workers, "features": n, "scored": status.get("scored", 0),
            "failed": status.get("failed", 0), "wall_s": round(wall, 2),
            "features_per_hour": round(n / wall * 3600), "harness_cpu_s_per_feature":
            round(cpu / n, 4), "json_decode_s_per_feature": round(floor, 4), "calls": calls, "calls_per_feature": round(calls / n, 2),
            "calls_per_s": round(calls / wall, 1),
            "server_cpu_share": round((s1["cpu_s"] - s0["cpu_s"]) / wall, 3),
            "rerun_s": round(rerun, 2), "cache_only_rerun_s": round(cached, 2)}


def json_floor(db: Path) -> float:
    """CPU seconds to decode the server's answers to one feature's simulation calls, as
    the client decodes them (wire.decode_vllm_completion, the slots' tail), timed on
    stored requests: what no change of the client's other work removes."""
    sys.path.insert(0, str(HERE))
    from instant_server import completion_answer

    from autointerp.db import open_db
    from autointerp.llm.wire import decode_vllm_completion

    rows = list(open_db(db).query("select request from llm_calls where request like ? limit 10",
                                  ['%"prompt_logprobs_after":"\\t"%']))
    requests = [json.loads(r["request"]) for r in rows]
    bodies = [(completion_answer({**r, "model": "instant"}).encode(),
               r["prompt"].count("\tunknown")) for r in requests]  # the slots read
    t0 = time.process_time()  # CPU time: the machine may be shared
    for body, slots in bodies:
        assert decode_vllm_completion(body, "\t", slots) is not None
    return (time.process_time() - t0) / max(len(bodies), 1) * 10  # 10 scored fragments


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-features", type=int, default=200, help="Features scored per scorer.")
    ap.add_argument("--concurrency", type=int, default=64, help="Features in flight at once.")
    ap.add_argument("--tokens", type=int, default=40_000, help="Tokens harvested for the store.")
    ap.add_argument("--work", type=Path, default=Path(".cache/bench-throughput"),
                    help="Folder for the store, dictionary and databases (kept).")
    ap.add_argument("--scorer", action="append", choices=sorted(SCORERS),
                    help="Scorer to run (repeatable; default all).")
    ap.add_argument("--workers", action="append", type=int,
                    help="score --workers N to run (repeatable; default 1 and 2).")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    store, dict_path, template, frag_s = setup(args.work, args.tokens, args.n_features)
    server, url = start_server()
    try:
        rows = [run_scorer(s, args, store, dict_path, template, url, w)
                for s in args.scorer or list(SCORERS) for w in args.workers or [1, 2]]
    finally:
        server.terminate()
        server.wait()
    print(json.dumps({"cpus": os.cpu_count(), "concurrency": args.concurrency,
                      "fragment_sampling_s": round(frag_s, 2), "scorers": rows}, indent=2))


if __name__ == "__main__":
    main()
