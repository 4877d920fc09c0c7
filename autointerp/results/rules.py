"""The negative rule and failure ledger of each run's rows, as compare shows them.

Detection and fuzzing contrast a feature's examples by one of two rules (scoring/
contrast.py): checked all-zero negatives, or for dense features a low and a high
threshold on window maxima. Scores under the two rules answer different questions, so
a run whose features used both gets one table row per rule, never one mixed mean.
"""

from __future__ import annotations

import json

import pandas as pd

from autointerp.scoring.ledger import summarise_ledger

NO_RULE = "-"
"""Simulation (and rows recorded before the rules): no negatives."""


def rule_of(metrics: str | None) -> str:
    """The negative rule a feature row records (the first explanation's; all share it)."""
    if not metrics:
        return NO_RULE
    entries = json.loads(metrics).get("negative_rule") or []
    return (entries[0] or {}).get("rule", NO_RULE) if entries else NO_RULE


def with_rules(feats: pd.DataFrame) -> pd.DataFrame:
    """feats with a `negatives` column (zero | threshold | -)."""
    out = feats.copy()
    metrics = out["metrics"] if "metrics" in out else pd.Series([None] * len(out), index=out.index)
    out["negatives"] = [rule_of(m) for m in metrics]
    return out


def rule_groups(scored: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(rule, rows) for each rule the run's scored features used; one group of all rows
    when they used one rule or none."""
    rules = list(dict.fromkeys(scored["negatives"])) if "negatives" in scored else [NO_RULE]
    if len(rules) <= 1:
        return [(rules[0] if rules else NO_RULE, scored)]
    return [(r, scored[scored["negatives"] == r]) for r in sorted(rules)]


def ledger_line(mine: pd.DataFrame, n_sampled) -> str:
    """The run's failure ledger in one line, from all its feature rows."""
    rows = [{"status": r.status, "reason": getattr(r, "reason", None),
             "metrics": getattr(r, "metrics", None)} for r in mine.itertuples(index=False)]
    n = int(n_sampled) if n_sampled is not None and n_sampled == n_sampled else len(rows)
    return summarise_ledger(rows, n).line()
