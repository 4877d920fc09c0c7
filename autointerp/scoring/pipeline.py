"""The score run: fragments -> explain -> simulate -> score -> results database.

A run is identified by the sha256 of its config (dictionary and store contents,
sampling settings, explainer and simulator identities and modes, seeds, N
explanations), so the same settings always land on the same rows. Each feature's
row is written once, in one statement, when it is complete (scored, or failed with
its reason): a killed run loses only the features in flight, and a rerun skips
the features already there, so nothing is scored twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import sqlite_utils

from autointerp import db as dbm
from autointerp.errors import BadInputError
from autointerp.harvest.store import ActivationStore
from autointerp.llm.base import EndpointAuthError, LLMCallError
from autointerp.scoring.explain import ExplanationFailed
from autointerp.scoring.fragments import (
    FeatureFragments,
    FragmentConfig,
    FragmentSet,
    collect_fragments,
    fragment_set_from_json,
    fragment_set_to_json,
)
from autointerp.scoring.stats import mean_ci, score_simulation
from autointerp.types import SimulationFailed

RUN_VERSION = 1
CALL_FAILED = "llm call failed"
"""Reason prefix of features lost to endpoint errors; a rerun tries them again."""


@dataclass(frozen=True)
class ScoreConfig:
    dictionary: Path
    store: Path | None = None
    """Activation store with the eval fragments; default: the one in the dictionary's metadata."""
    fragments: FragmentConfig = field(default_factory=FragmentConfig)
    explanations_per_feature: int = 1
    """N explanations per feature (sample_index 0..N-1); its score is their mean."""
    concurrency: int = 8
    """Features in flight at once (not part of the run id: it changes no result)."""
    selftest: bool = True
    """Run the simulator self-test (cached) first and record it with the run."""
    label: str | None = None
    """Label in tables; default: the dictionary's method, with ' (lexical)' for lexical runs."""
    force: bool = False
    """Score even when the store's model, hook point or input transform differs from the
    dictionary's; the mismatches are recorded in the run's config, and the run id says forced."""

    def __post_init__(self):
        if self.explanations_per_feature < 1 or self.concurrency < 1:
            raise BadInputError("--explanations-per-feature and --concurrency must be at least 1")


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    label: str
    dictionary: str
    explainer: str
    simulator: str
    simulator_mode: str
    n_sampled: int
    n_skipped: int
    n_scored: int
    n_failed: int
    failures: tuple[tuple[str, int], ...]
    """(reason with numbers as N, count), most frequent first."""
    mean: float
    lo: float
    hi: float
    mean_spread: float
    """Mean over features of the std of the score over explanations (NaN when N = 1)."""
    selftest_id: str | None
    selftest_passed: bool | None
    notes: str = ""


class NullProgress:
    """What the run reports as it goes; the CLI's rich progress bar has the same methods."""

    def fragments_task(self, total: int):
        return lambda n: None

    def features_task(self, label: str, total: int, already_done: int) -> None:
        pass

    def feature_done(self, failed: bool) -> None:
        pass


def sha256_json(obj) -> str:
    return hashlib.sha256(dbm.dumps(obj).encode()).hexdigest()


def store_id(store: ActivationStore) -> str:
    return sha256_json(store.meta)


def resolve_store(cfg: ScoreConfig, meta: dict) -> Path:
    if cfg.store is not None:
        return Path(cfg.store)
    for key in ("store", "store_path", "acts"):
        if meta.get(key):
            return Path(meta[key])
    raise BadInputError(f"dictionary {cfg.dictionary} does not name its activation store; pass "
                        "--acts STORE, or --model M --corpus C to harvest its hook point")


def fragment_set(db, dictionary, dict_id: str, store: ActivationStore, cfg: FragmentConfig,
                 progress) -> FragmentSet:
    """The sampled features and fragments, computed once and kept in `fragment_sets`."""
    key = sha256_json({"dictionary": dict_id, "store": store_id(store), "cfg": asdict(cfg),
                       "version": RUN_VERSION})
    rows = list(db.query("select data from fragment_sets where id = ?", [key]))
    if rows:
        return fragment_set_from_json(json.loads(zlib.decompress(rows[0]["data"])))
    tick = progress.fragments_task(2 * store.n_eval_fragments)
    fs = collect_fragments(dictionary, store, cfg, tick=tick)
    data = zlib.compress(dbm.dumps(fragment_set_to_json(fs)).encode(), 6)
    db["fragment_sets"].insert({"id": key, "dictionary_id": dict_id, "n_sampled": len(fs.features),
                                "n_eligible": fs.n_eligible, "n_skipped": fs.n_skipped,
                                "data": data, "created_at": dbm.now()}, ignore=True)
    return fs


def run_label(cfg: ScoreConfig, meta: dict, explainer, simulator) -> str:
    if cfg.label:
        return cfg.label
    base = meta.get("label") or meta.get("method") or "dictionary"
    lex = [who for who, x in (("explainer", explainer), ("simulator", simulator))
           if x.name == "lexical"]
    return base + {0: "", 1: f" (lexical {lex[0]})" if lex else "", 2: " (lexical)"}[len(lex)]


def _frag(f) -> dict:
    return {"index": f.index, "tokens": list(f.tokens), "activations": list(f.activations)}


def _nanmean(xs) -> float | None:
    """Mean ignoring NaN (a random-only score is undefined where the truth is constant);
    None, SQLite's null, when nothing is left."""
    xs = [x for x in xs if not math.isnan(x)]
    return float(np.mean(xs)) if xs else None


async def score_feature(ff: FeatureFragments, explainer, simulator, n_shown: int,
                        n_explanations: int) -> dict:
    """One feature's row: explained n_explanations times, each explanation simulated and
    scored. Any failure fails the feature, with its reason; nothing is scored partially."""
    shown, scoring = ff.explainer_fragments(n_shown), ff.scoring_fragments(n_shown)
    fragments = {"n_nonzero": ff.n_nonzero, "n_top": n_shown,
                 "explainer": [_frag(f) for f in shown], "scoring": [_frag(f) for f in scoring]}

    async def one(i: int):
        explanation = await explainer.explain(shown, sample_index=i)
        simulation = await simulator.simulate(explanation.text, scoring)
        return explanation.text, simulation, score_simulation(scoring, simulation, n_top=n_shown)

    try:
        results = await asyncio.gather(*(one(i) for i in range(n_explanations)))
    except EndpointAuthError:
        raise  # a rejected key fails every feature alike: stop the run, record nothing
    except (ExplanationFailed, SimulationFailed, LLMCallError) as e:
        stage = ("explanation" if isinstance(e, ExplanationFailed) else
                 "simulation" if isinstance(e, SimulationFailed) else CALL_FAILED)
        return {"feature": ff.feature, "status": "failed", "reason": f"{stage}: {e}",
                "fragments": dbm.dumps(fragments)}
    texts = [text for text, _, _ in results]
    scores = [score for _, _, score in results]
    fragments["simulations"] = [[list(p) for p in sim.predictions] for _, sim, _ in results]
    return {"feature": ff.feature, "status": "scored", "reason": None, "explanation": texts[0],
            "explanations": dbm.dumps(texts), "score": _nanmean([s.all for s in scores]),
            "score_top": _nanmean([s.top for s in scores]),
            "score_random": _nanmean([s.random for s in scores]),
            "score_spread": float(np.std([s.all for s in scores])) if len(scores) > 1 else None,
            "constant": int(any(s.constant for s in scores)), "fragments": dbm.dumps(fragments)}


def pending(db, run_id: str, features: tuple[FeatureFragments, ...]) -> list[FeatureFragments]:
    """Features with no row yet, or whose row failed on an endpoint error (never cached,
    so trying again may succeed)."""
    done = {r["feature"] for r in db.query(
        "select feature from features where run_id = ? and (status = 'scored' or reason is null "
        "or reason not like ?)", [run_id, CALL_FAILED + "%"])}
    return [ff for ff in features if ff.feature not in done]


async def _selftest(simulator, db, store, enabled: bool):
    if not enabled:
        return None
    from autointerp.scoring.selftest import selftest

    return await selftest(simulator, db, store=store)


def _upsert_dictionary(db, dict_id: str, path: Path, dictionary) -> None:
    meta = dictionary.meta
    evals = meta.get("eval") or meta.get("metrics") or {}
    db["dictionaries"].upsert({
        "id": dict_id, "path": str(path), "method": meta.get("method"), "model": meta.get("model"),
        "hook": meta.get("hook"), "layer": meta.get("layer"), "n_features": dictionary.n_features,
        "l0": meta.get("l0", evals.get("l0")), "fvu": meta.get("fvu", evals.get("fvu")),
        "meta": dbm.dumps(meta), "created_at": dbm.now()}, pk="id")


async def score_dictionary_async(cfg: ScoreConfig, explainer, simulator,
                                 db: sqlite_utils.Database,
                                 progress=None) -> RunSummary:
    from autointerp.dictionaries.dictionary import check_compatible, dictionary_id, load_dictionary

    progress = progress or NullProgress()
    dictionary = load_dictionary(cfg.dictionary)
    dict_id = dictionary_id(cfg.dictionary)
    store = ActivationStore(resolve_store(cfg, dictionary.meta))
    forced = check_compatible(dictionary, store, cfg.force)
    await simulator.prepare()
    st = await _selftest(simulator, db, store, cfg.selftest)
    fs = fragment_set(db, dictionary, dict_id, store, cfg.fragments, progress)
    config = {"dictionary_id": dict_id, "store_id": store_id(store),
              "fragments": asdict(cfg.fragments), "n_explanations": cfg.explanations_per_feature,
              "explainer": explainer.settings(), "simulator": simulator.settings(),
              "version": RUN_VERSION}
    if forced:  # only then, so that the ids of ordinary runs stay what they were
        config["forced"] = True
    run_id = sha256_json(config)  # paths are recorded below but left out of the id
    label = run_label(cfg, dictionary.meta, explainer, simulator)
    _upsert_dictionary(db, dict_id, cfg.dictionary, dictionary)
    db["runs"].insert({"id": run_id, "dictionary_id": dict_id, "label": label,
                       "explainer": explainer.name, "simulator": simulator.name,
                       "simulator_mode": simulator.mode, "selftest_id": st.id if st else None,
                       "config": dbm.dumps({**config, "dictionary_path": str(cfg.dictionary),
                                            "store_path": str(store.path),
                                            "forced_mismatches": forced}),
                       "n_sampled": len(fs.features), "n_skipped": fs.n_skipped,
                       "created_at": dbm.now()}, ignore=True)
    todo = pending(db, run_id, fs.features)
    progress.features_task(label, len(fs.features), len(fs.features) - len(todo))
    sem = asyncio.Semaphore(cfg.concurrency)

    async def run(ff: FeatureFragments) -> None:
        async with sem:
            row = await score_feature(ff, explainer, simulator, cfg.fragments.n_shown,
                                      cfg.explanations_per_feature)
        row.update(run_id=run_id, created_at=dbm.now())
        for k in ("explanation", "explanations", "score", "score_top", "score_random",
                  "score_spread", "constant"):
            row.setdefault(k, None)
        db["features"].upsert(row, pk=("run_id", "feature"))
        progress.feature_done(row["status"] == "failed")

    await asyncio.gather(*(run(ff) for ff in todo))
    return summarise(db, run_id, simulator, st, seed=cfg.fragments.seed)


def score_dictionary(cfg: ScoreConfig, explainer, simulator, db: sqlite_utils.Database,
                     progress=None) -> RunSummary:
    """Synchronous entry point; inside an event loop, await score_dictionary_async."""
    return asyncio.run(score_dictionary_async(cfg, explainer, simulator, db, progress))


def summarise(db, run_id: str, simulator=None, st=None, seed: int = 0) -> RunSummary:
    """Counts, failure reasons and the mean score with its 95% CI, from the rows in the DB."""
    run = db["runs"].get(run_id)
    rows = list(db.query("select status, reason, score, score_spread from features "
                         "where run_id = ?", [run_id]))
    scored = [r for r in rows if r["status"] == "scored"]
    reasons = Counter(re.sub(r"\d+", "N", r["reason"] or "") for r in rows if r["status"] == "failed")
    mean, lo, hi = mean_ci([r["score"] for r in scored if r["score"] is not None], seed=seed)
    spreads = [r["score_spread"] for r in scored if r["score_spread"] is not None]
    return RunSummary(
        run_id, run["label"], run["dictionary_id"], run["explainer"], run["simulator"],
        run["simulator_mode"], run["n_sampled"], run["n_skipped"], len(scored),
        len(rows) - len(scored), tuple(reasons.most_common()), mean, lo, hi,
        float(np.mean(spreads)) if spreads else math.nan, run["selftest_id"],
        None if st is None else bool(st.passed), getattr(simulator, "note", ""))
