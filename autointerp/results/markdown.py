"""The comparison as text: table.md and differences.md (and the rows the terminal and
the report show), from the tables that compare.py builds."""

from __future__ import annotations

import math

import pandas as pd

N_RESAMPLES = 10_000
SCORER_MEANING = {
    "simulation": "Pearson correlation between simulated and true activations, pooled over "
                  "every token of the top and random scoring fragments (Bills et al. 2023); "
                  "top only and random only pool one kind",
    "detection": "balanced accuracy (chance 0.5) of the judge's 1/0 verdicts on held-out "
                 "examples where the feature fires (across its activation quantiles) and as "
                 "many checked zero-activation ones; AUROC of P(1) where logprobs exist",
    "fuzzing": "balanced accuracy (chance 0.5) of the judge's verdict on whether the marked "
               "tokens are the ones the explanation describes; AUROC of P(1) where logprobs exist",
    "output": "Arad et al.'s output score (judge-free): after steering the feature at the "
              "KL-matched strength, (1 - best rank of its decoder's top-20 tokens / |V|) x their "
              "highest probability, mean over held-out prompts",
    "intervention": "mean over held-out prompts of log P(explanation | steered continuation) - "
                    "log P(explanation | clean continuation), the subject model as scorer",
}

def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt_ci(mean, lo, hi) -> str:
    if _missing(mean):
        return "n/a"
    if _missing(lo) or _missing(hi):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def _fmt_num(x) -> str:
    return "n/a" if _missing(x) else f"{x:.3g}"


def display_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    """The table as strings, shared by table.md, the terminal and the report."""
    out = []
    for r in table.itertuples(index=False):
        out.append({
            "method": r.method + (" (reference)" if r.reference and "lexical" not in r.method else ""),
            "model": str(r.model), "hook": str(r.hook), "layer": str(r.layer),
            "scorer": str(r.scorer), "negatives": str(getattr(r, "negatives", "-")),
            "explainer": str(r.explainer), "simulator": str(r.simulator),
            "scored": str(r.n_scored), "failed": str(r.n_failed),
            "score (95% CI)": _fmt_ci(r.score_mean, r.score_lo, r.score_hi),
            "top only": _fmt_ci(r.top_mean, r.top_lo, r.top_hi),
            "random only": _fmt_ci(r.random_mean, r.random_lo, r.random_hi),
            "AUROC (95% CI)": _fmt_ci(r.auroc_mean, r.auroc_lo, r.auroc_hi),
            "L0": _fmt_num(r.l0), "FVU": _fmt_num(r.fvu), "self-test": r.selftest,
            "calls / feature": _fmt_calls(r), "tokens / feature": _fmt_tokens(r),
            "ledger": str(getattr(r, "ledger", "")),
        })
    return out


def _fmt_calls(r) -> str:
    """Explanation calls + the scorer's calls, mean per feature."""
    if _missing(r.n_calls_per_feature):
        return "n/a"
    return f"{r.explain_n_calls_per_feature:.1f} + {r.n_calls_per_feature:.1f}"


def _fmt_tokens(r) -> str:
    """Prompt + completion tokens of the scorer's own calls, mean per feature; marked when
    some calls reported no usage."""
    if _missing(r.prompt_tokens_per_feature):
        return "n/a"
    unknown = r.usage_unknown_per_feature + r.explain_usage_unknown_per_feature
    return (f"{r.prompt_tokens_per_feature:,.0f} + {r.completion_tokens_per_feature:,.0f}"
            + (f" ({unknown:.1f} calls unknown)" if unknown else ""))


def scorer_columns(table: pd.DataFrame) -> list[dict[str, str]]:
    """One row per method and explainer/simulator, one score column (with CI) per scorer."""
    scorers = list(dict.fromkeys(table.scorer))
    rows: dict[tuple, dict[str, str]] = {}
    for r in table.itertuples(index=False):
        rule = getattr(r, "negatives", "-")
        key = (r.method, r.hook, r.explainer, r.simulator, rule if rule == "threshold" else "")
        name = r.method + (" [threshold negatives]" if rule == "threshold" else "")
        row = rows.setdefault(key, {"method": name, "hook": str(r.hook),
                                    "explainer / simulator": f"{r.explainer} / {r.simulator}",
                                    **{s: "-" for s in scorers}})
        row[r.scorer] = _fmt_ci(r.score_mean, r.score_lo, r.score_hi)
    return list(rows.values())


def _markdown(rows: list[dict[str, str]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _banner(lines: list[str]) -> str:
    """Self-test verdicts as a blockquote at the very top; failures in bold."""
    if not lines:
        return ""
    quoted = [f"> **{ln}**" if ln.startswith("WARNING") else f"> {ln}" for ln in lines]
    return "\n>\n".join(quoted) + "\n\n"


def table_markdown(table: pd.DataFrame, verdicts: list[str], seed: int) -> str:
    scorers = list(dict.fromkeys(table.scorer))
    out = _banner(verdicts) + "# Interpretability score by method\n\n"
    if len(scorers) > 1:
        out += ("Each scorer scores the same explanations; its own section below says what "
                "its score means.\n\n" + _markdown(scorer_columns(table)) + "\n")
    for scorer in scorers:
        rows = table[table.scorer == scorer]
        if len(scorers) > 1:
            out += f"## {scorer}\n\n"
        out += (_markdown(display_rows(rows)) + f"\nScore: {SCORER_MEANING.get(scorer, scorer)}. "
                "Each cell is the mean over scored features with a 95% bootstrap CI "
                f"({N_RESAMPLES:,} resamples, seed {seed}). Rows whose explainer or simulator is "
                "`lexical` are a reference: how much of a feature token identity alone explains; "
                "an LLM explanation should beat them. L0 and FVU describe the dictionary. Calls "
                "per feature: the explanation's + the scorer's; tokens per feature: prompt + "
                "completion tokens of the scorer's calls. Negatives (detection, fuzzing): `zero` = "
                "checked all-zero windows; `threshold` = a dense feature's windows whose maximum "
                "is at most the 20% quantile of its window maxima, against windows at or above "
                "the 80% quantile; a run that used both has a row per rule. Ledger: features "
                "lost by kind, and the retries, unparsed answers, truncations and safety drops "
                "behind the score.\n\n")
    return out.rstrip("\n") + "\n"


def differences_markdown(diffs: pd.DataFrame, verdicts: list[str], seed: int) -> str:
    head = (_banner(verdicts) + "# Differences in mean score\n\n"
            "Mean score of A minus mean score of B, 95% bootstrap CI "
            f"({N_RESAMPLES:,} resamples, seed {seed}). Runs of the same dictionary are paired "
            "over the features both scored; different dictionaries have unrelated features, so "
            "their scores are resampled independently. The last column says which.\n\n")
    if diffs.empty:
        return head + "No two runs share a hook point and a scorer or a dictionary.\n"
    rows = [{
        "hook": str(d.hook), "scorer": d.scorer, "A": d.method_a, "B": d.method_b,
        "negatives": str(getattr(d, "negatives", "-")),
        "explainer / simulator": d.scorer_a if d.scorer_a == d.scorer_b else
        f"A: {d.scorer_a}; B: {d.scorer_b}",
        "A - B (95% CI)": _fmt_ci(d.difference, d.lo, d.hi),
        "excludes 0": "n/a" if math.isnan(d.lo) else ("yes" if d.lo > 0 or d.hi < 0 else "no"),
        "n A / n B": f"{d.n_a} / {d.n_b}", "resampling": d.resampling,
    } for d in diffs.itertuples(index=False)]
    return head + _markdown(rows)
