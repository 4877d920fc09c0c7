"""The one SQLite database: LLM-call cache and results, through sqlite-utils.

WAL mode and a busy timeout let several `score` processes share it. Migrations
are append-only and named (the simonw/llm pattern): never edit one that shipped,
add a new one at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import orjson
import sqlite_utils
from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

BUSY_TIMEOUT_MS = 60_000

MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = []


def migration(fn):
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    db["llm_calls"].create({
        "key": str,          # sha256 of the canonical request (see llm/cache.py)
        "client": str,       # e.g. inprocess:smollm2-135m, openai:http://host/v1 gpt-4o
        "request": str,      # JSON, never containing an API key
        "response": str,     # JSON Completion, with logprobs
        "latency_s": float,
        "created_at": str,
    }, pk="key")
    db["dictionaries"].create({
        "id": str,           # sha256 of the dictionary's weights file
        "path": str,
        "method": str,       # tied | relu | topk | pca | ica | neurons | random | saelens | sparsify
        "model": str,
        "hook": str,         # e.g. resid.3
        "layer": int,
        "n_features": int,
        "l0": float,
        "fvu": float,
        "meta": str,         # JSON
        "created_at": str,
    }, pk="id")
    db["runs"].create({
        "id": str,           # sha256 of the config JSON
        "dictionary_id": str,
        "label": str,        # method label shown in tables, e.g. "topk", "pca (lexical)"
        "explainer": str,
        "simulator": str,
        "simulator_mode": str,
        "selftest_id": str,  # the simulator self-test this run's scores depend on
        "config": str,       # JSON: every setting of the run
        "n_sampled": int,
        "n_skipped": int,    # features with too few non-zero fragments
        "created_at": str,
    }, pk="id")
    db["features"].create({
        "run_id": str,
        "feature": int,
        "status": str,       # scored | failed
        "reason": str,       # why it failed, else null
        "explanation": str,  # the first explanation
        "explanations": str, # JSON list when --explanations-per-feature > 1
        "score": float,      # pooled top+random correlation (mean over explanations)
        "score_top": float,
        "score_random": float,
        "score_spread": float,  # std of the score over explanations
        "constant": int,     # 1 when a simulation was constant (scored 0)
        "fragments": str,    # JSON: explainer and scoring fragments, tokens, true and simulated activations
        "created_at": str,
    }, pk=("run_id", "feature"))
    db["selftests"].create({
        "id": str,           # sha256 of the simulator identity and self-test settings
        "simulator": str,
        "simulator_mode": str,
        "right_mean": float, "right_lo": float, "right_hi": float,
        "wrong_mean": float, "wrong_lo": float, "wrong_hi": float,
        "gap_mean": float, "gap_lo": float, "gap_hi": float,
        "passed": int,
        "thresholds": str,   # JSON
        "details": str,      # JSON: per planted feature scores
        "created_at": str,
    }, pk="id")


@migration
def m002_fragment_sets(db: sqlite_utils.Database) -> None:
    # Sampled features and their top/random fragments (pipeline.py), computed once per
    # dictionary, store and sampling settings, so a rerun or resume skips both passes
    # over the eval split.
    db["fragment_sets"].create({
        "id": str,           # sha256 of dictionary id, store metadata and sampling settings
        "dictionary_id": str,
        "n_sampled": int,
        "n_eligible": int,
        "n_skipped": int,
        "data": bytes,       # zlib-compressed JSON: per feature, its top and random fragments
        "created_at": str,
    }, pk="id")


@migration
def m003_scorers_and_cost(db: sqlite_utils.Database) -> None:
    # Several scorers per dictionary: a run is one dictionary x scorer. Per
    # feature: AUROC, small metrics (recall per quantile, slots without an answer), and
    # the tokens and calls billed to its explanation and to its scorer.
    db["runs"].add_column("scorer", str)  # simulation | detection | fuzzing (null: simulation)
    db["features"].add_column("auroc", float)
    db["features"].add_column("metrics", str)  # JSON, one entry per explanation
    for prefix in ("explain_", ""):
        for column in ("n_calls", "prompt_tokens", "completion_tokens", "usage_unknown"):
            db["features"].add_column(prefix + column, int)
    db["selftests"].add_column("scorer", str)


@migration
def m004_causal_runs(db: sqlite_utils.Database) -> None:
    # One row per `patch` or `circuit` run (autointerp/causal): its settings, the task
    # check, and the figures it wrote (curves, costs, or the circuit), as JSON.
    db["causal_runs"].create({
        "id": str,           # sha256 of the config JSON
        "kind": str,         # patch | circuit
        "model": str,
        "hook": str,         # the patched hook point, or the target's
        "task": str,         # ioi | a pairs file | the circuit's target
        "dictionaries": str, # JSON list of {label, id, path}
        "config": str,       # JSON
        "task_check": str,   # JSON, null when the task has no answers
        "warning": str,      # empty unless the model failed the task check
        "summary": str,      # JSON: curve points and costs, or nodes and edges
        "out": str,          # the folder the files went to
        "created_at": str,
    }, pk="id")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


@retry(retry=retry_if_exception(_locked), wait=wait_random_exponential(0.01, max=0.5),
       stop=stop_after_delay(BUSY_TIMEOUT_MS / 1000), reraise=True)
def _enable_wal(db: sqlite_utils.Database) -> None:
    """Switch a database to WAL once. Retried by hand because SQLite answers "database is
    locked" at once, without waiting out the busy timeout, when two processes open a new
    database together and both need the exclusive lock the switch takes (measured: 17 of
    200 races of 4 processes failed without the retry)."""
    if db.journal_mode != "wal":
        db.enable_wal()


def open_db(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) and migrate the database."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(path)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _enable_wal(db)
    db.execute("PRAGMA synchronous = NORMAL")
    with db.conn:  # one transaction, so two processes cannot apply a migration twice
        db.execute("BEGIN IMMEDIATE")
        if "_migrations" not in db.table_names():
            db["_migrations"].create({"name": str, "applied_at": str}, pk="name")
        done = {r["name"] for r in db["_migrations"].rows}
        for name, fn in MIGRATIONS:
            if name not in done:
                fn(db)
                db["_migrations"].insert({"name": name, "applied_at": now()})
    return db


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def loads(data: str | bytes):
    """JSON from a server or a stored row: orjson (twice as fast on the large logprob
    answers that dominate a scoring run), or the standard library where orjson refuses
    what Python's own `json` writes and reads (NaN, Infinity)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
