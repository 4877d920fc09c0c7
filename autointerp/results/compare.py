"""The method comparison (Cunningham et al. 2023, Figure 2): mean interpretability
score per run with bootstrap 95% CIs, pairwise differences, and the simulator
self-test verdict that every artefact made from these scores must carry.

Everything here reads the results database only; `write_comparison` writes the
files that `autointerp compare` promises: table.md, table.csv, differences.md and
scores.png.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
import sqlite_utils

from autointerp.errors import BadInputError
from autointerp.results.markdown import (  # noqa: F401 (re-exported: compare's public names)
    N_RESAMPLES,
    SCORER_MEANING,
    _fmt_ci,
    _fmt_num,
    _missing,
    differences_markdown,
    display_rows,
    scorer_columns,
    table_markdown,
)
from autointerp.results.output_columns import add_output_columns, output_markdown
from autointerp.results.rules import ledger_line, rule_groups, with_rules
from autointerp.scoring.stats import mean_ci

FAILED = "FAILED: scores not meaningful"
SCORE_KINDS = {"score": "score", "top": "score_top", "random": "score_random"}
"""Output column prefix -> features column: pooled top+random, top-only, random-only."""

RUNS_SQL = """
SELECT r.id AS run_id, r.label AS method, d.model, d.hook, d.layer, r.explainer, r.simulator,
       r.simulator_mode, r.n_sampled, r.n_skipped, d.id AS dictionary_id, d.method AS dictionary_method,
       d.n_features, d.l0, d.fvu, r.selftest_id, s.passed AS selftest_passed,
       COALESCE(r.scorer, 'simulation') AS scorer
FROM runs r
LEFT JOIN dictionaries d ON d.id = r.dictionary_id
LEFT JOIN selftests s ON s.id = r.selftest_id
ORDER BY CASE COALESCE(r.scorer, 'simulation') WHEN 'simulation' THEN 0 WHEN 'detection' THEN 1
         ELSE 2 END, d.layer, d.hook, (r.explainer LIKE 'lexical%' OR r.simulator LIKE 'lexical%'),
         r.explainer, r.simulator, r.label, r.id
"""
COSTS = ("explain_n_calls", "explain_prompt_tokens", "explain_completion_tokens",
         "explain_usage_unknown", "n_calls", "prompt_tokens", "completion_tokens", "usage_unknown")


def is_lexical(explainer: str | None, simulator: str | None) -> bool:
    """A lexical row is a reference (how much token identity alone explains), not a method."""
    return any(str(name or "").startswith("lexical") for name in (explainer, simulator))


def _selftest_label(passed, simulator: str) -> str:
    if is_lexical(None, simulator):
        return "n/a (lexical)"  # see SelftestVerdict.applies
    return "none" if _missing(passed) else "passed" if int(passed) else FAILED


def ci(values, seed: int) -> tuple[float, float, float]:
    """(mean, lo, hi) over the values that exist (SQL NULL arrives as None or NaN)."""
    return mean_ci([float(x) for x in values if x is not None], seed)


def load_runs(db: sqlite_utils.Database) -> pd.DataFrame:
    if "runs" not in db.table_names() or db["runs"].count == 0:
        raise BadInputError(f"{db.conn.execute('PRAGMA database_list').fetchone()[2]} has no "
                            "scored runs; run `autointerp score` (or `autointerp demo`) first")
    return pd.read_sql_query(RUNS_SQL, db.conn)


def load_features(db: sqlite_utils.Database) -> pd.DataFrame:
    return pd.read_sql_query(
        "SELECT run_id, feature, status, reason, metrics, score, score_top, score_random, "
        f"auroc, {', '.join(COSTS)} FROM features", db.conn).pipe(with_rules)


def _cost(rows: pd.DataFrame) -> dict:
    """Mean calls and tokens per feature (scored or failed: both were paid for)."""
    if rows.empty:
        return {f"{c}_per_feature": math.nan for c in COSTS}
    return {f"{c}_per_feature": float(rows[c].fillna(0).mean()) for c in COSTS}


def build_table(db: sqlite_utils.Database, seed: int = 0) -> pd.DataFrame:
    """One row per run (dictionary x explainer x simulator), in the order of RUNS_SQL."""
    runs, feats = load_runs(db), load_features(db)
    rows = []
    for run in runs.itertuples(index=False):
        mine = feats[feats.run_id == run.run_id]
        for rule, scored in rule_groups(mine[mine.status == "scored"]):
            rows.append(_row(run, mine, scored, rule, seed))
    return add_output_columns(db, pd.DataFrame(rows), seed)


def _row(run, mine: pd.DataFrame, scored: pd.DataFrame, rule: str, seed: int) -> dict:
    """One table row: a run, or the part of it scored under one negative rule."""
    row = {
        "method": run.method, "model": run.model, "hook": run.hook, "layer": run.layer,
        "explainer": run.explainer, "simulator": run.simulator,
        "simulator_mode": run.simulator_mode,
        "n_scored": len(scored), "n_failed": int((mine.status == "failed").sum()),
        "n_skipped": run.n_skipped, "scorer": run.scorer, "negatives": rule,
        "ledger": ledger_line(mine, run.n_sampled),
    }
    for prefix, column in {**SCORE_KINDS, "auroc": "auroc"}.items():
        row[f"{prefix}_mean"], row[f"{prefix}_lo"], row[f"{prefix}_hi"] = ci(
            scored[column].tolist(), seed)
    row.update(_cost(mine))
    row.update({
        "l0": run.l0, "fvu": run.fvu, "selftest": _selftest_label(run.selftest_passed, run.simulator),
        "reference": is_lexical(run.explainer, run.simulator),
        "run_id": run.run_id, "dictionary_id": run.dictionary_id,
        "dictionary_method": run.dictionary_method,
    })
    return row


def _difference(a: pd.DataFrame, b: pd.DataFrame, same_dictionary: bool, seed: int) -> dict:
    """Mean score of a minus b with a 95% CI. Paired over shared features when both
    runs scored the same dictionary (the same feature under two explainers or
    simulators); features of different dictionaries are unrelated, so otherwise
    the two samples are resampled independently."""
    sa, sb = a.set_index("feature").score.dropna(), b.set_index("feature").score.dropna()
    shared = sa.index.intersection(sb.index)
    if same_dictionary and len(shared) >= 2:
        d = (sa[shared] - sb[shared]).to_numpy()
        mean, lo, hi = ci(d, seed)
        return {"difference": mean, "lo": lo, "hi": hi, "n_a": len(shared), "n_b": len(shared),
                "resampling": f"paired over {len(shared)} shared features"}
    mean = float(sa.mean() - sb.mean()) if len(sa) and len(sb) else math.nan
    lo = hi = math.nan
    if len(sa) >= 2 and len(sb) >= 2:
        if np.ptp(sa) == 0 and np.ptp(sb) == 0:
            lo = hi = mean
        else:
            res = scipy.stats.bootstrap(
                (sa.to_numpy(), sb.to_numpy()), lambda x, y, axis: x.mean(axis) - y.mean(axis),
                paired=False, vectorized=True, n_resamples=N_RESAMPLES,
                rng=np.random.default_rng(seed))
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"difference": mean, "lo": lo, "hi": hi, "n_a": len(sa), "n_b": len(sb),
            "resampling": "independent"}


def build_differences(db: sqlite_utils.Database, seed: int = 0) -> pd.DataFrame:
    """Every pair of runs on the same hook point that share the explainer and simulator
    (methods compared like for like) or the dictionary (e.g. LLM vs lexical rows)."""
    runs, feats = load_runs(db), load_features(db)
    scored = feats[feats.status == "scored"]
    rows = []
    for a, b in itertools.combinations(runs.itertuples(index=False), 2):
        same_scorer = (a.explainer, a.simulator) == (b.explainer, b.simulator)
        same_dictionary = a.dictionary_id == b.dictionary_id
        if a.hook != b.hook or a.scorer != b.scorer or not (same_scorer or same_dictionary):
            continue  # scores of different scorers are on different scales
        # Under each pair of negative rules apart: a difference never mixes them silently.
        for (ra, fa), (rb, fb) in itertools.product(
                rule_groups(scored[scored.run_id == a.run_id]),
                rule_groups(scored[scored.run_id == b.run_id])):
            d = _difference(fa, fb, same_dictionary, seed)
            rows.append({"hook": a.hook, "layer": a.layer, "scorer": a.scorer,
                         "method_a": a.method, "scorer_a": f"{a.explainer} / {a.simulator}",
                         "method_b": b.method, "scorer_b": f"{b.explainer} / {b.simulator}",
                         "negatives": ra if ra == rb else f"A {ra}, B {rb}", **d})
    return pd.DataFrame(rows, columns=[
        "hook", "layer", "scorer", "method_a", "scorer_a", "method_b", "scorer_b", "negatives",
        "difference", "lo", "hi", "n_a", "n_b", "resampling"])


@dataclass(frozen=True)
class SelftestVerdict:
    """What the simulator self-test on planted features found, for the runs that use it."""

    simulator: str
    simulator_mode: str
    passed: bool
    right: tuple[float, float, float]
    """Mean score with the right explanation, and its 95% CI."""
    wrong: tuple[float, float, float]
    """Mean score with another planted feature's explanation."""
    gap: tuple[float, float, float]
    thresholds: dict
    methods: tuple[str, ...]
    """Labels of the runs whose scores depend on this simulator."""
    scorer: str = "simulation"
    """The scorer whose self-test this is (detection and fuzzing judge with the simulator's model)."""

    @property
    def applies(self) -> bool:
        """The planted explanations are English; the lexical simulator reads only the quoted
        tokens a lexical explainer writes, so it cannot pass, and need not: its rows are a
        deterministic reference, checked on planted features by its own tests."""
        return not is_lexical(None, self.simulator) and self.simulator_mode != "lexical"

    def line(self) -> str:
        figures = (f"right-explanation mean {_fmt_ci(*self.right)}, wrong-explanation mean "
                   f"{_fmt_ci(*self.wrong)}, gap {_fmt_ci(*self.gap)}")
        limits = ", ".join(f"{k} >= {v}" for k, v in
                           sorted(self.thresholds.items(), key=lambda kv: kv[0] != "right"))
        who = f"simulator {self.simulator} ({self.simulator_mode})"
        test = "self-test" if self.scorer == "simulation" else f"self-test for {self.scorer}"
        if self.scorer != "simulation":
            who = f"judge {self.simulator} ({self.simulator_mode})"
        if not self.applies:
            return (f"Note: the self-test does not apply to {who}: it reads only quoted tokens, "
                    f"not the planted English explanations ({figures}); its rows are a "
                    "deterministic reference.")
        if self.passed:
            return (f"Self-test passed: {who} on planted features{'' if test == 'self-test' else f' ({self.scorer})'}: "
                    f"{figures} (thresholds: {limits}).")
        scores = "Scores" if self.scorer == "simulation" else f"{self.scorer.capitalize()} scores"
        return (f"WARNING: {who} FAILED its {test} on planted features: {figures} "
                f"(thresholds: {limits}). {scores} of {', '.join(self.methods)} are not meaningful.")


def selftest_verdicts(db: sqlite_utils.Database) -> list[SelftestVerdict]:
    """One verdict per simulator and outcome that some run's scores depend on, failures
    first. Self-tests with the same outcome (one per activation store, on the same
    tokens) are merged, so a reader sees each finding once."""
    merged: dict[tuple, list] = {}
    for st in db.query("SELECT * FROM selftests WHERE id IN (SELECT selftest_id FROM runs) "
                       "ORDER BY passed, simulator"):
        key = (st["simulator"], st["simulator_mode"] or "", bool(st["passed"]),
               *(st[f"{n}_{k}"] for n in ("right", "wrong", "gap") for k in ("mean", "lo", "hi")),
               st["thresholds"] or "{}", st.get("scorer") or "simulation")
        merged.setdefault(key, []).extend(r["label"] for r in db.query(
            "SELECT label FROM runs WHERE selftest_id = ?", [st["id"]]))
    order = {"simulation": 0, "detection": 1, "fuzzing": 2}
    return sorted((SelftestVerdict(
        simulator=k[0], simulator_mode=k[1], passed=k[2], right=k[3:6], wrong=k[6:9],
        gap=k[9:12], thresholds=json.loads(k[12]), methods=tuple(sorted(set(labels))),
        scorer=k[13]) for k, labels in merged.items()),
        key=lambda v: (v.passed, order.get(v.scorer, 3)))


def verdict_lines(db: sqlite_utils.Database) -> list[str]:
    """The self-test lines every artefact starts with: warnings first, then passes, then
    runs whose simulator has no recorded self-test (unvalidated)."""
    def rank(v: SelftestVerdict) -> int:
        return 2 if not v.applies else 1 if v.passed else 0

    lines = [v.line() for v in sorted(selftest_verdicts(db), key=rank)]
    untested = [r["label"] for r in db.query(
        "SELECT DISTINCT label FROM runs WHERE (selftest_id IS NULL OR selftest_id NOT IN "
        "(SELECT id FROM selftests)) AND simulator NOT LIKE 'lexical%' ORDER BY label")]
    if untested:
        lines.append(f"Note: no simulator self-test is recorded for {', '.join(untested)}; "
                     "their scores are unvalidated.")
    from autointerp.results.checks import perturbation_lines

    flagged = perturbation_lines(db)
    return [ln for ln in flagged if ln.startswith("WARNING")] + lines + \
        [ln for ln in flagged if not ln.startswith("WARNING")]


@dataclass(frozen=True)
class Checks:
    """Stability of each ordering and margins over the random floor (checks.py)."""

    pairs: pd.DataFrame
    methods: pd.DataFrame
    margins: pd.DataFrame
    text: str


def build_checks(db: sqlite_utils.Database, table: pd.DataFrame, seed: int = 0) -> Checks:
    from autointerp.results.checks import checks_markdown, floor_margins, stability

    feats = load_features(db)
    pairs, methods = stability(table, feats, seed)
    margins = floor_margins(table, feats, _difference, seed)
    return Checks(pairs, methods, margins, checks_markdown(pairs, methods, margins, seed))


@dataclass(frozen=True)
class ComparisonFiles:
    table: pd.DataFrame
    differences: pd.DataFrame
    verdicts: list[str]
    paths: dict[str, Path]


def write_comparison(db: sqlite_utils.Database, out: Path, seed: int = 0) -> ComparisonFiles:
    """Write table.md, table.csv, differences.md and scores.png under `out`."""
    from autointerp.results.plot import save_scores

    table, diffs, verdicts = build_table(db, seed), build_differences(db, seed), verdict_lines(db)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in
             ("table.md", "table.csv", "differences.md", "scores.png")}
    checks = build_checks(db, table, seed)
    outputs = output_markdown(table)
    paths["table.md"].write_text(table_markdown(table, verdicts, seed)
                                 + ("\n" + outputs if outputs else "") + "\n" + checks.text)
    table.to_csv(paths["table.csv"], index=False)
    paths["differences.md"].write_text(differences_markdown(diffs, verdicts, seed))
    save_scores(table, verdicts, paths["scores.png"])
    return ComparisonFiles(table, diffs, verdicts, paths)
