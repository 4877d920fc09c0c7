"""The score run: fragments -> explain -> score (each scorer asked for) -> results database.

A run is one dictionary scored by one scorer, identified by the sha256 of its config
(dictionary and store contents, sampling settings, explainer and simulator identities
and modes, seeds, N explanations, and for detection and fuzzing the scorer and its
settings), so the same settings always land on the same rows. Each feature is
explained once and that explanation is scored by every scorer (feature.py). Each feature's
row is written once, in one statement, when it is complete (scored, or failed with
its reason): a killed run loses only the features in flight, and a rerun skips
the features already there, so nothing is scored twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import sqlite_utils

from autointerp import db as dbm
from autointerp.errors import BadInputError
from autointerp.harvest.store import ActivationStore
from autointerp.scoring.feature import CALL_FAILED, score_feature
from autointerp.scoring.fragments import (
    FeatureFragments,
    FragmentConfig,
    FragmentSet,
    collect_fragments,
    fragment_set_from_json,
    fragment_set_to_json,
)
from autointerp.scoring.ledger import summarise_ledger
from autointerp.scoring.scorers import make_scorers, parse_scorers
from autointerp.scoring.scorers.draws import check_draws
from autointerp.scoring.stats import import_bootstrap, mean_ci
from autointerp.scoring.steered import SteerSettings, bind_steering
from autointerp.scoring.usage import metered
from autointerp.scoring.verdicts import JudgeSettings
from autointerp.scoring.workers import Shard

RUN_VERSION = 1
__all__ = ["CALL_FAILED", "ScoreConfig", "RunSummary", "score_dictionary", "score_dictionary_runs"]


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
    scorers: tuple[str, ...] = ("simulation",)
    """simulation, detection, fuzzing (or all): each scores the same explanations."""
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    """Detection and fuzzing settings (quantile bins, batch size, example length)."""
    steering: SteerSettings = field(default_factory=SteerSettings)
    """Output and intervention settings (target KL, prompts, continuation length)."""
    resample_examples: int = 1
    """Seeded draws of each scorer's held-out examples per explanation (scorers/draws.py);
    the score is their mean. 1: today's single draw, same scores and run ids."""

    def __post_init__(self):
        if self.explanations_per_feature < 1 or self.concurrency < 1:
            raise BadInputError("--explanations-per-feature and --concurrency must be at least 1")
        object.__setattr__(self, "scorers", parse_scorers(self.scorers))
        check_draws(self.resample_examples, self.scorers)


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
    scorer: str = "simulation"
    auroc: float = math.nan
    """Mean AUROC over features (detection, fuzzing with logprobs)."""
    cost: tuple[tuple[str, float], ...] = ()
    """Per scored-or-failed feature, mean calls and tokens: (name, value) pairs for
    explain and score calls, prompt and completion tokens, calls without usage."""
    unexplained: tuple[int, ...] = ()
    """Sampled features that explanations given in a file leave out (not scored)."""
    ledger: str = ""
    """The failure ledger in one line (ledger.py): features lost by kind, and the retries,
    unparsed answers, truncations and safety drops behind the score."""


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
    """The sampled features and fragments, computed once and kept in `fragment_sets`.
    `dictionary`: the Dictionary, or a function that loads it (only called when the
    fragments are not stored yet)."""
    key = sha256_json({"dictionary": dict_id, "store": store_id(store), "cfg": asdict(cfg),
                       "version": RUN_VERSION})
    rows = list(db.query("select data from fragment_sets where id = ?", [key]))
    if rows:
        return fragment_set_from_json(dbm.loads(zlib.decompress(rows[0]["data"])))
    if callable(dictionary):
        dictionary = dictionary()
    tick = progress.fragments_task(2 * store.n_eval_fragments)
    fs = collect_fragments(dictionary, store, cfg, tick=tick)
    data = zlib.compress(dbm.dumps(fragment_set_to_json(fs)).encode(), 6)
    db["fragment_sets"].insert({"id": key, "dictionary_id": dict_id, "n_sampled": len(fs.features),
                                "n_eligible": fs.n_eligible, "n_skipped": fs.n_skipped,
                                "data": data, "created_at": dbm.now()}, ignore=True)
    return fs


def run_label(cfg: ScoreConfig, meta: dict, explainer, simulator) -> str:
    outputs = " +outputs" if getattr(explainer, "outputs", False) else ""
    if cfg.label:
        return cfg.label + outputs
    base = meta.get("label") or meta.get("method") or "dictionary"
    lex = [who for who, x in (("explainer", explainer), ("simulator", simulator))
           if x.name == "lexical"]
    return base + outputs + {0: "", 1: f" (lexical {lex[0]})" if lex else "",
                             2: " (lexical)"}[len(lex)]


def pending(db, run_id: str, features: tuple[FeatureFragments, ...]) -> list[FeatureFragments]:
    """Features with no row yet, or whose row failed on an endpoint error (never cached,
    so trying again may succeed)."""
    done = {r["feature"] for r in db.query(
        "select feature from features where run_id = ? and (status = 'scored' or reason is null "
        "or reason not like ?)", [run_id, CALL_FAILED + "%"])}
    return [ff for ff in features if ff.feature not in done]


async def _selftests(scorers, simulator, db, store, enabled: bool) -> dict:
    """Each scorer's self-test on planted features (cached), by scorer name."""
    if not enabled:
        return {}
    from autointerp.scoring.perturbation import checked
    from autointerp.scoring.selftest import selftest

    out = {}
    for scorer in scorers:
        if hasattr(scorer, "bind"):  # steering scorers: planted output features instead
            from autointerp.scoring.selftest_outputs import run_output_selftest

            out[scorer.name] = run_output_selftest(scorer, db, store=store, ctx=scorer.ctx)
        else:
            out[scorer.name] = await selftest(simulator, db, store=store, scorer=scorer)
            await checked(scorer, simulator, db, store=store)  # flagged in compare's tables
    return out


def _upsert_dictionary(db, dict_id: str, path: Path, dictionary) -> None:
    meta = dictionary.meta
    evals = meta.get("eval") or meta.get("metrics") or {}
    db["dictionaries"].upsert({
        "id": dict_id, "path": str(path), "method": meta.get("method"), "model": meta.get("model"),
        "hook": meta.get("hook"), "layer": meta.get("layer"), "n_features": dictionary.n_features,
        "l0": meta.get("l0", evals.get("l0")), "fvu": meta.get("fvu", evals.get("fvu")),
        "meta": dbm.dumps(meta), "created_at": dbm.now()}, pk="id")


def _run_config(base: dict, scorer) -> dict:
    """A simulation run's config is what it was before there were other scorers, so its
    run id (and a database's finished rows) stay valid."""
    if scorer.name == "simulation":
        return {**base, **scorer.settings()}  # empty unless examples are drawn again
    return {**base, "scorer": scorer.name, "scorer_settings": scorer.settings()}


def _insert_run(db, run_id, config, cfg, store, dict_id, label, explainer, simulator, scorer,
                st, fs) -> None:
    db["runs"].insert({"id": run_id, "dictionary_id": dict_id, "label": label,
                       "explainer": explainer.name, "simulator": simulator.name,
                       "simulator_mode": simulator.mode, "selftest_id": st.id if st else None,
                       "scorer": scorer.name,
                       "config": dbm.dumps({**config, "dictionary_path": str(cfg.dictionary),
                                            "store_path": str(store.path)}),
                       "n_sampled": len(fs.features), "n_skipped": fs.n_skipped,
                       "created_at": dbm.now()}, ignore=True)
    if st is not None:  # a rerun links the self-test made now (a newer version's verdict)
        db["runs"].update(run_id, {"selftest_id": st.id})


def _save(db, row: dict, run_id: str) -> None:
    row.update(run_id=run_id, created_at=dbm.now())
    for k in ("explanation", "explanations", "score", "score_top", "score_random",
              "score_spread", "constant", "auroc", "metrics"):
        row.setdefault(k, None)
    db["features"].upsert(row, pk=("run_id", "feature"))


async def score_dictionary_runs(cfg: ScoreConfig, explainer, simulator,
                                db: sqlite_utils.Database, progress=None, workers=None
                                ) -> tuple[RunSummary, ...]:
    """Score one dictionary with every scorer of cfg.scorers; one summary per scorer.
    `workers` (scoring/workers.Workers): score the features in that many processes."""
    from autointerp.dictionaries.header import Header, check_compatible
    from autointerp.dictionaries.sources import dictionary_id, load_dictionary, read_header

    progress = progress or NullProgress()
    dictionary = read_header(cfg.dictionary)  # the weights are read if fragments must be made
    dict_id = dictionary_id(cfg.dictionary)
    store = ActivationStore(resolve_store(cfg, dictionary.meta))
    forced = check_compatible(dictionary, store, cfg.force)
    if set(cfg.scorers) - {"simulation"} and cfg.judge.example_len > store.fragment_len:
        raise BadInputError(f"--example-tokens {cfg.judge.example_len} is longer than the "
                            f"store's {store.fragment_len}-token fragments")
    metered(explainer)
    metered(simulator)
    scorers = make_scorers(cfg.scorers, simulator, cfg.judge, cfg.steering, cfg.resample_examples)
    if workers is not None and workers.n > 1 and any(hasattr(s, "bind") for s in
                                                     (*scorers, explainer)):
        raise BadInputError("the output and intervention scorers and --explain-outputs steer "
                            "the model in one process: run them with --workers 1")
    bind_steering((*scorers, explainer), cfg.dictionary, store, db)
    for scorer in scorers:
        await scorer.prepare()
    tests = await _selftests(scorers, simulator, db, store, cfg.selftest)
    fs = fragment_set(db, (lambda: load_dictionary(cfg.dictionary)) if isinstance(dictionary, Header)
                      else dictionary, dict_id, store, cfg.fragments, progress)
    base = {"dictionary_id": dict_id, "store_id": store_id(store),
            "fragments": asdict(cfg.fragments), "n_explanations": cfg.explanations_per_feature,
            "explainer": explainer.settings(), "simulator": simulator.settings(),
            "version": RUN_VERSION}
    if forced:  # only then, so that the ids of ordinary runs stay what they were
        base["forced"] = True
    label = run_label(cfg, dictionary.meta, explainer, simulator)
    _upsert_dictionary(db, dict_id, cfg.dictionary, dictionary)
    run_ids, todo = {}, {}
    for scorer in scorers:
        config = _run_config(base, scorer)
        run_ids[scorer.name] = run_id = sha256_json(config)  # paths are left out of the id
        _insert_run(db, run_id, {**config, "forced_mismatches": forced}, cfg, store, dict_id,
                    label, explainer, simulator, scorer, tests.get(scorer.name), fs)
        todo[scorer.name] = {ff.feature for ff in pending(db, run_id, fs.features)}
    unexplained = given_gaps(explainer, fs, todo)
    features = [ff for ff in fs.features if any(ff.feature in t for t in todo.values())]
    progress.features_task(label, len(fs.features) - len(unexplained),
                           len(fs.features) - len(unexplained) - len(features))
    args = (cfg.fragments.n_shown, cfg.explanations_per_feature)
    if workers is None or workers.n == 1 or len(features) < 2:
        await score_features(features, explainer, scorers, todo, run_ids, db, *args,
                             cfg.concurrency, progress.feature_done)
    else:
        share = workers.share(cfg.concurrency)
        mine, *rest = workers.split(features, [ff.feature for ff in fs.features])
        shards = [Shard(workers.db_path, workers.make_llms, score_features,
                        tuple(s.name for s in scorers),
                        cfg.judge, run_ids,
                        {k: frozenset(ff.feature for ff in part if ff.feature in v)
                         for k, v in todo.items()}, tuple(part), *args, share,
                        draws=cfg.resample_examples)
                  for part in rest if part]

        async def own_share() -> None:
            await score_features(mine, explainer, scorers, todo, run_ids, db, *args, share,
                                 progress.feature_done)
            import_bootstrap()  # for the summary, while the workers finish theirs

        await asyncio.gather(
            own_share(),
            workers.run(shards, progress.feature_done, getattr(progress, "worker_counts", None)))
    for scorer in scorers:  # nulls that need every feature's explanation (intervention)
        if hasattr(scorer, "finish"):
            await scorer.finish(db, run_ids[scorer.name])
    return tuple(replace(summarise(db, run_ids[s.name], simulator, tests.get(s.name),
                                   seed=cfg.fragments.seed), unexplained=unexplained)
                 for s in scorers)


def given_gaps(explainer, fs: FragmentSet, todo: dict) -> tuple[int, ...]:
    """With explanations given in a file (scoring/given.py), the sampled features it does
    not explain: taken out of `todo`, listed by the caller, not scored."""
    explained = getattr(explainer, "explained", None)
    if explained is None:
        return ()
    for name, features in todo.items():
        todo[name] = {f for f in features if explained(f)}
    return tuple(ff.feature for ff in fs.features if not explained(ff.feature))


async def score_features(features, explainer, scorers, todo: dict, run_ids: dict, db,
                         n_shown: int, n_explanations: int, concurrency: int,
                         feature_done) -> None:
    """Explain and score each feature (at most `concurrency` at once) with the scorers
    whose `todo` holds it, writing each feature's rows when it is complete."""
    sem = asyncio.Semaphore(concurrency)

    async def run(ff: FeatureFragments) -> None:
        mine = [s for s in scorers if ff.feature in todo[s.name]]
        async with sem:
            rows = await score_feature(ff, explainer, mine, n_shown, n_explanations)
        for name, row in rows.items():
            _save(db, row, run_ids[name])
        feature_done(any(r["status"] == "failed" for r in rows.values()))

    await asyncio.gather(*(run(ff) for ff in features))


async def score_dictionary_async(cfg: ScoreConfig, explainer, simulator,
                                 db: sqlite_utils.Database, progress=None) -> RunSummary:
    """The first scorer's summary (simulation unless cfg.scorers says otherwise)."""
    return (await score_dictionary_runs(cfg, explainer, simulator, db, progress))[0]


def score_dictionary(cfg: ScoreConfig, explainer, simulator, db: sqlite_utils.Database,
                     progress=None) -> RunSummary:
    """Synchronous entry point; inside an event loop, await score_dictionary_async."""
    return asyncio.run(score_dictionary_async(cfg, explainer, simulator, db, progress))


COST_COLUMNS = ("explain_n_calls", "explain_prompt_tokens", "explain_completion_tokens",
                "explain_usage_unknown", "n_calls", "prompt_tokens", "completion_tokens",
                "usage_unknown")


def summarise(db, run_id: str, simulator=None, st=None, seed: int = 0) -> RunSummary:
    """Counts, failure reasons, the mean score with its 95% CI and the mean cost per
    feature, from the rows in the DB."""
    run = db["runs"].get(run_id)
    rows = list(db.query(f"select status, reason, score, score_spread, auroc, metrics, "
                         f"{', '.join(COST_COLUMNS)} from features where run_id = ?", [run_id]))
    scored = [r for r in rows if r["status"] == "scored"]
    reasons = Counter(re.sub(r"\d+", "N", r["reason"] or "") for r in rows if r["status"] == "failed")
    mean, lo, hi = mean_ci([r["score"] for r in scored if r["score"] is not None], seed=seed)
    spreads = [r["score_spread"] for r in scored if r["score_spread"] is not None]
    aurocs = [r["auroc"] for r in scored if r["auroc"] is not None]
    cost = tuple((c, float(np.mean([r[c] or 0 for r in rows])) if rows else math.nan)
                 for c in COST_COLUMNS)
    return RunSummary(
        run_id, run["label"], run["dictionary_id"], run["explainer"], run["simulator"],
        run["simulator_mode"], run["n_sampled"], run["n_skipped"], len(scored),
        len(rows) - len(scored), tuple(reasons.most_common()), mean, lo, hi,
        float(np.mean(spreads)) if spreads else math.nan, run["selftest_id"],
        None if st is None else bool(st.passed), getattr(simulator, "note", ""),
        run["scorer"] or "simulation", float(np.mean(aurocs)) if aurocs else math.nan, cost,
        ledger=summarise_ledger(rows, run["n_sampled"]).line())
