"""The output-side scores' own columns (output and intervention runs): Arad et al.'s input
score beside the output score, the intervention score over its shuffled-explanation null,
the random-direction row, and what steering cost per feature. Read from each feature's
`metrics`; other runs get NaN."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import sqlite_utils

from autointerp.scoring.stats import mean_ci

OUTPUT_SCORERS = ("output", "intervention")
COLUMNS = ("input", "vs_null", "random_direction")
COSTS = ("forward_passes", "generated_tokens", "seconds")


def _first(x):
    """metrics hold one value per explanation; the first explanation's is the one scored
    against the null (shuffled_null) and the random direction."""
    return x[0] if isinstance(x, list) and x else x


def _values(metrics: list[dict], key: str) -> list[float]:
    out = []
    for m in metrics:
        v = _first(m.get(key))
        if isinstance(v, (int, float)) and not math.isnan(v):
            out.append(float(v))
    return out


def run_columns(db: sqlite_utils.Database, run_id: str, seed: int) -> dict:
    rows = list(db.query("select status, metrics from features where run_id = ?", [run_id]))
    metrics = [json.loads(r["metrics"]) if r["metrics"] else {} for r in rows
               if r["status"] == "scored"]
    out = {}
    for name, key in (("input", "input_score"), ("vs_null", "vs_null"),
                      ("random_direction", "random_direction")):
        out[f"{name}_mean"], out[f"{name}_lo"], out[f"{name}_hi"] = mean_ci(
            _values(metrics, key), seed=seed)
    lows = _values(metrics, "vs_null_lo")
    out["vs_null_excludes_0"] = float(np.mean([lo > 0 for lo in lows])) if lows else math.nan
    costs = [_first(m.get("costs")) or {} for m in metrics]
    for c in COSTS:
        vals = [float(x[c]) for x in costs if x.get(c) is not None]
        out[f"steer_{c}_per_feature"] = float(np.mean(vals)) if vals else math.nan
    return out


def add_output_columns(db: sqlite_utils.Database, table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The table with the output-side columns (NaN on rows of other scorers)."""
    if table.empty:
        return table
    extra = [run_columns(db, r.run_id, seed) if r.scorer in OUTPUT_SCORERS else {}
             for r in table.itertuples(index=False)]
    return pd.concat([table.reset_index(drop=True), pd.DataFrame(extra)], axis=1)


def _ci(row, name: str) -> str:
    mean, lo, hi = (getattr(row, f"{name}_{k}", math.nan) for k in ("mean", "lo", "hi"))
    if mean is None or math.isnan(mean):
        return "n/a"
    return f"{mean:.4f}" if math.isnan(lo) else f"{mean:.4f} [{lo:.4f}, {hi:.4f}]"


def _num(x, fmt: str = ".1f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def output_markdown(table: pd.DataFrame) -> str:
    """A section comparing methods on the output-side scores (empty without such runs)."""
    if "scorer" not in table or not table.scorer.isin(OUTPUT_SCORERS).any():
        return ""
    lines = ["## Output-side scores", "",
             "| method | scorer | score (95% CI) | random direction, same norm | input score (Arad) "
             "| over shuffled explanations | features whose CI excludes 0 | forward passes / feature "
             "| generated tokens / feature | seconds / feature |", "|" + "---|" * 10]
    for r in table[table.scorer.isin(OUTPUT_SCORERS)].itertuples(index=False):
        lines.append(" | ".join([
            f"| {r.method}", r.scorer, _ci(r, "score"), _ci(r, "random_direction"),
            _ci(r, "input") if r.scorer == "output" else "-",
            _ci(r, "vs_null") if r.scorer == "intervention" else "-",
            _num(r.vs_null_excludes_0 * 100, ".0f") + "%" if r.scorer == "intervention"
            and not math.isnan(r.vs_null_excludes_0) else "-",
            _num(r.steer_forward_passes_per_feature), _num(r.steer_generated_tokens_per_feature),
            _num(r.steer_seconds_per_feature, ".2f")]) + " |")
    return "\n".join(lines) + ("\n\nOutput score: Arad et al.'s (1 - best rank of T / |V|) x max "
                               "p(T) after steering at the KL-matched strength, T the decoder's "
                               "top-20 tokens; input score: share of top fragments whose most "
                               "active token is in T. Intervention: mean log P(explanation | "
                               "steered text) - log P(explanation | clean text) with the subject "
                               "model as scorer; 'over shuffled explanations' subtracts the same "
                               "with other features' explanations (95% bootstrap CI over "
                               "features; per feature, its CI over prompts decides the next "
                               "column).\n")


def score_html(scorer: str, feat: dict) -> str | None:
    """The report card's score line for an output-side run (None: another scorer)."""
    if scorer not in OUTPUT_SCORERS or feat.get("score") is None:
        return None
    m = json.loads(feat.get("metrics") or "{}") if isinstance(feat.get("metrics"), str) else {}
    extra = ""
    if scorer == "output" and _first(m.get("input_score")) is not None:
        extra = f", input score {_first(m['input_score']):.3f}"
    if scorer == "intervention" and m.get("vs_null") is not None:
        extra = f", over shuffled explanations {m['vs_null']:.3f} [{m['vs_null_lo']:.3f}, {m['vs_null_hi']:.3f}]"
    return f'<span class="score">{scorer}: {feat["score"]:.4f}{extra}</span>'


def steered_html(scorer: str, frags: dict, metrics: str | None, n_shown: int = 5) -> str:
    """Promoted and suppressed tokens beside the first steered continuations (escaped)."""
    import html

    if scorer not in OUTPUT_SCORERS:
        return ""
    e = html.escape
    m = json.loads(metrics) if metrics else {}
    first = {k: _first(frags.get(k)) for k in ("promoted", "suppressed", "continuations")}
    first.update({k: _first(m.get(k)) for k in ("strength", "kl")})
    parts = []
    if first["promoted"]:
        parts.append("promotes " + ", ".join(f"<code>{e(repr(t))}</code>" for t in first["promoted"][:10]))
    if first["suppressed"]:
        parts.append("suppresses " + ", ".join(f"<code>{e(repr(t))}</code>" for t in first["suppressed"][:10]))
    if first["strength"] is not None:
        parts.append(f"steered at s = {first['strength']:.3g} (mean next-token KL {first['kl']:.3f})")
    out = f'<p class="lens">{"<br>".join(parts)}</p>' if parts else ""
    conts = first["continuations"] or {}
    if conts.get("steered"):
        rows = "".join(f"<tr><td>{e(c)}</td><td>{e(s)}</td></tr>" for c, s in
                       list(zip(conts.get("clean", []), conts["steered"], strict=False))[:n_shown])
        out += ('<details class="steered"><summary>continuations: clean beside steered</summary>'
                f'<table><tr><th>clean</th><th>steered</th></tr>{rows}</table></details>')
    return out
