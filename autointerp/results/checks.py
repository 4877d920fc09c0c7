"""What compare adds beside each mean: how stable each ordering is, and each method's
margin over a random-direction floor (Korznikov et al. 2026: random dictionaries score
close to trained SAEs under LLM judges, so a score means little without its floor).

Methods are compared like for like: rows of one hook point, scorer, explainer,
simulator and negative rule. The floor of a group is its
row of the `random` baseline or of a random SAE (`random-sae`: the trained SAE's shape
and norms, random directions); the margin is the method's mean minus the floor's, with
a 95% bootstrap CI (features resampled independently: different dictionaries).
"""

from __future__ import annotations

import json
import math

import pandas as pd

from autointerp.results.stability import (
    HOLDS,
    N_STABILITY,
    pair_orders,
    ranking_tau,
    variance_split,
)

FLOORS = ("random", "random-sae")
"""Dictionary methods that are random-direction floors."""
GROUP = ["hook", "scorer", "explainer", "simulator", "negatives"]


def _scores(feats: pd.DataFrame, row) -> list:
    """Per scored feature of the row: its score per explanation sample (one when N = 1),
    each a list of its example draws' scores where there are several (--resample-examples)."""
    mine = feats[(feats.run_id == row.run_id) & (feats.status == "scored")]
    if "negatives" in mine:
        mine = mine[mine.negatives == row.negatives]
    out = []
    for score, metrics in zip(mine.score, mine.metrics, strict=True):
        per = (json.loads(metrics).get("scores") if metrics else None) or [score]
        per = [x for x in per if x is not None and not (isinstance(x, float) and math.isnan(x))]
        if per:
            out.append(per)
    return out


def groups(table: pd.DataFrame):
    """(group key, rows) of like-for-like methods: the lexical reference rows form groups
    of their own (their explainer and simulator differ), ranked the same way."""
    yield from table.groupby(GROUP, sort=False, dropna=False)


def stability(table: pd.DataFrame, feats: pd.DataFrame, seed: int = 0
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pair orders, per-method variance split and ranking tau) for every group."""
    pairs, methods = [], []
    for key, rows in groups(table):
        scores = {r.method: _scores(feats, r) for r in rows.itertuples(index=False)}
        scores = {m: s for m, s in scores.items() if len(s) >= 2}
        info = dict(zip(GROUP, key, strict=True))
        for p in pair_orders(scores, seed):
            pairs.append({**info, "higher": p.a, "lower": p.b, "share": p.share,
                          "stable": p.stable})
        tau, tau5 = ranking_tau(scores, seed)
        for m, s in scores.items():
            v = variance_split(s)
            methods.append({**info, "method": m, "tau_mean": tau, "tau_q05": tau5,
                            "var_total": v.total, "var_feature": v.feature,
                            "var_explanation": v.explanation, "var_draw": v.draw,
                            "n_features": v.n_features, "n_explanations": v.n_explanations,
                            "n_draws": v.n_draws})
    return (pd.DataFrame(pairs, columns=[*GROUP, "higher", "lower", "share", "stable"]),
            pd.DataFrame(methods))


def floor_margins(table: pd.DataFrame, feats: pd.DataFrame, difference, seed: int = 0
                  ) -> pd.DataFrame:
    """Each method's mean minus its group's random floor, with a 95% bootstrap CI.
    `difference(a, b, same_dictionary, seed)`: compare's difference of two runs' scores."""
    out = []
    for key, rows in groups(table):
        floors = rows[rows.dictionary_method.isin(FLOORS)]
        for floor in floors.itertuples(index=False):
            fs = pd.DataFrame({"feature": range(len(s := _scores(feats, floor))),
                               "score": [sum(x) / len(x) for x in s]})
            for r in rows.itertuples(index=False):
                if r.run_id == floor.run_id:
                    continue
                m = _scores(feats, r)
                ms = pd.DataFrame({"feature": range(len(m)), "score": [sum(x) / len(x) for x in m]})
                d = difference(ms, fs, False, seed)
                out.append({**dict(zip(GROUP, key, strict=True)), "method": r.method,
                            "floor": floor.method, "margin": d["difference"], "lo": d["lo"],
                            "hi": d["hi"], "n": d["n_a"], "n_floor": d["n_b"]})
    return pd.DataFrame(out, columns=[*GROUP, "method", "floor", "margin", "lo", "hi", "n",
                                      "n_floor"])


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _g(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _where(r) -> str:
    neg = f", {r.negatives} negatives" if r.negatives not in ("-", None) else ""
    return f"{r.hook}, {r.scorer}{neg}, {r.explainer} / {r.simulator}"


def checks_markdown(pairs: pd.DataFrame, methods: pd.DataFrame, margins: pd.DataFrame,
                    seed: int) -> str:
    """The stability and floor sections of table.md."""
    out = [f"## Stability of each ordering\n\nShare of {N_STABILITY:,} bootstrap resamples "
           f"(features, and explanation samples where there are several; seed {seed}) in which "
           f"the higher method's mean stays above the lower's. **UNSTABLE** marks an order "
           f"that holds in under {HOLDS:.0%} of them.\n"]
    if pairs.empty:
        out.append("No two like-for-like methods with two or more scored features.\n")
    for r in pairs.itertuples(index=False):
        mark = "stable" if r.stable else "**UNSTABLE**"
        out.append(f"- {r.higher} > {r.lower} ({_where(r)}): holds in {r.share:.1%}: {mark}")
    if not methods.empty:
        out.append("\nKendall tau between the observed ranking of a group's methods and each "
                   "resample's (mean, and 5% quantile; n/a under three methods), and the "
                   "variance of each method's scores split into between-feature, "
                   "between-explanation-sample and between-example-draw parts (they sum to "
                   "the total):\n")
        for _, rows in methods.groupby(GROUP, sort=False, dropna=False):
            r = rows.iloc[0]
            out.append(f"- ranking ({_where(r)}): tau {_fmt(r.tau_mean)}, 5% quantile "
                       f"{_fmt(r.tau_q05)}")
            for r in rows.itertuples(index=False):
                out.append(f"  - {r.method}: variance {_g(r.var_total)} = feature "
                           f"{_g(r.var_feature)} + explanation {_g(r.var_explanation)} + draw "
                           f"{_g(r.var_draw)} ({r.n_features} features x {r.n_explanations} "
                           f"explanation samples x {r.n_draws} example draws)")
    out.append("\n## Margin over the random floor\n\nMean score minus the mean of the random-"
               "direction dictionary scored the same way (95% bootstrap CI, features resampled "
               "independently). A margin whose CI includes 0 is not above the floor.\n")
    if margins.empty:
        out.append("No random-direction dictionary (`random` baseline or `random-sae`) was scored "
                   "like for like with another method.\n")
    for r in margins.itertuples(index=False):
        above = "above the floor" if r.lo > 0 else "**not above the floor**"
        out.append(f"- {r.method} - {r.floor} ({_where(r)}): {_fmt(r.margin)} "
                   f"[{_fmt(r.lo)}, {_fmt(r.hi)}], n {r.n} / {r.n_floor}: {above}")
    return "\n".join(out) + "\n"


def perturbation_lines(db) -> list[str]:
    """One line per perturbation check that a run's scores depend on (same simulator, mode
    and scorer); a flagged scorer's line starts with WARNING, like a failed self-test."""
    if "perturbations" not in db.table_names():
        return []
    out = []
    for p in db.query(
            "SELECT DISTINCT p.* FROM perturbations p JOIN runs r ON r.simulator = p.simulator "
            "AND r.simulator_mode = p.simulator_mode AND COALESCE(r.scorer, 'simulation') = p.scorer "
            "ORDER BY p.flagged DESC, p.scorer, p.simulator"):
        who = f"{p['scorer']} with {p['simulator']} ({p['simulator_mode']})"
        if not p["ran"]:
            out.append(f"Note: the perturbation check of {who} could not run: {p['note']}.")
            continue
        miss, extra = (json.loads(p[k]) for k in ("missing_drop", "extra_drop"))
        figures = (f"drop to a missing-label explanation {_fmt_ci3(miss)}, to an extra-label one "
                   f"{_fmt_ci3(extra)}, over {p['n_cases']} planted word sets")
        if p["flagged"]:
            out.append(f"WARNING: {who} FAILED its perturbation check: {figures}. Its scores "
                       "do not tell a partial or padded explanation from the right one.")
        else:
            out.append(f"Perturbation check passed: {who}: {figures}.")
    return list(dict.fromkeys(out))  # one line per finding, whatever the stores


def _fmt_ci3(v) -> str:
    mean, lo, hi = (float("nan") if x is None else x for x in v)
    return f"{_fmt(mean)} [{_fmt(lo)}, {_fmt(hi)}]"
