"""report.html: one self-contained static page (inline CSS and JS, no CDN, works
offline) with every feature of every run: explanation, score, top fragments shaded
by true activation and scoring fragments with simulated beside true activations.

Card headers are rendered here with html.escape. Fragment tokens travel as JSON in
a <script type="application/json"> block, escaped for that context, and the page's
script only ever puts them in the DOM through textContent: a fragment can contain
anything (markup, "</script>", control characters) and it stays text.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import sqlite_utils

from autointerp import db as dbm
from autointerp.results.compare import (
    build_table,
    display_rows,
    is_lexical,
    load_runs,
    verdict_lines,
)

FEATURES_SQL = """
SELECT run_id, feature, status, reason, explanation, explanations, score, score_top,
       score_random, score_spread, constant, fragments
FROM features ORDER BY run_id, feature
"""
SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                  "\u2028": "\\u2028", "\u2029": "\\u2029"}


@dataclass(frozen=True)
class ReportSummary:
    path: Path
    n_cards: int
    n_runs: int
    verdicts: list[str]


def _num(x, digits: int = 4):
    """JSON has no NaN (JSON.parse rejects it): missing and non-finite values become null."""
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), digits)


def compact_fragments(raw: str | None) -> dict:
    """features.fragments JSON (pipeline.score_feature) -> the page's compact form.

    Read: {"n_top": 5, "explainer": [{"tokens": [...], "activations": [...]}, ...],
    "scoring": [{"tokens", "activations"}, ...] (the first n_top are top fragments, the
    rest random), "simulations": [[predictions per scoring fragment], ...] (one list per
    explanation; the first belongs to the explanation shown)}. A scoring fragment may
    also carry its own "kind" and "simulated".
    Written: {"e": [[tokens, acts]], "s": [[tokens, acts, simulated, kind]]}."""
    frags = json.loads(raw) if raw else {}
    explainer = [[[str(t) for t in f["tokens"]], [_num(a) for a in f["activations"]]]
                 for f in frags.get("explainer", [])]
    simulations = (frags.get("simulations") or [[]])[0]
    n_top = frags.get("n_top", len(frags.get("scoring", [])))
    scoring = []
    for i, f in enumerate(frags.get("scoring", [])):
        simulated = f.get("simulated") or (simulations[i] if i < len(simulations) else None)
        kind = f.get("kind") or ("top" if i < n_top else "random")
        scoring.append([[str(t) for t in f["tokens"]], [_num(a) for a in f["activations"]],
                        [_num(p) for p in simulated or [None] * len(f["tokens"])], str(kind)])
    return {"e": explainer, "s": scoring}


def script_json(obj) -> str:
    """JSON that can sit inside <script> without ending it or being read as markup."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in SCRIPT_ESCAPES.items():
        text = text.replace(char, escaped)
    return text


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _card(i: int, run, feat: dict, untrusted: bool) -> str:
    e = html.escape
    scored = feat["status"] == "scored"
    badges = []
    if run.reference:
        badges.append('<span class="badge">lexical reference</span>')
    if feat["constant"]:
        badges.append('<span class="badge">constant simulation (scored 0)</span>')
    if untrusted:
        badges.append('<span class="badge warn">simulator failed its self-test</span>')
    if scored:
        score = (f'<span class="score">score {_fmt(feat["score"])} (top {_fmt(feat["score_top"])}, '
                 f'random {_fmt(feat["score_random"])})</span>')
    else:
        score = f'<span class="badge warn">failed: {e(feat["reason"] or "no reason recorded")}</span>'
    extra = ""
    samples = json.loads(feat["explanations"]) if feat["explanations"] else []
    if len(samples) > 1:
        items = "".join(f"<li>{e(str(s))}</li>" for s in samples)
        extra = (f'<details><summary>{len(samples)} explanations, score spread '
                 f'{_fmt(feat["score_spread"])}</summary><ul>{items}</ul></details>')
    sort_score = "" if feat["score"] is None or not scored else f'{feat["score"]:.6f}'
    classes = "card" + ("" if scored else " failed") + (" untrusted" if untrusted else "")
    return (
        f'<article class="{classes}" data-i="{i}" data-method="{e(run.method)}" '
        f'data-hook="{e(str(run.hook))}" data-status="{e(feat["status"])}" '
        f'data-feature="{int(feat["feature"])}" data-score="{sort_score}">'
        f'<header><span class="method">{e(run.method)}</span>'
        f'<span>{e(str(run.hook))} · feature {int(feat["feature"])}</span>{score}{"".join(badges)}'
        f'<span class="meta">{e(str(run.explainer))} / {e(str(run.simulator))}</span></header>'
        f'<p class="expl">{e(feat["explanation"] or "(no explanation)")}</p>{extra}'
        '<div class="top-frags"></div>'
        '<details class="scoring"><summary>scoring fragments: simulated beside true</summary>'
        '<div class="scoring-frags"></div></details></article>')


def _summary_table(db: sqlite_utils.Database, seed: int) -> str:
    rows = display_rows(build_table(db, seed))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values()) + "</tr>"
                   for r in rows)
    return f'<table class="summary"><tr>{head}</tr>{body}</table>'


def _banners(verdicts: list[str]) -> str:
    def kind(line: str) -> str:
        return ("fail" if line.startswith("WARNING") else
                "pass" if line.startswith("Self-test passed") else "note")
    return "\n".join(f'<div class="banner {kind(v)}">{html.escape(v)}</div>' for v in verdicts)


def _options(values) -> str:
    return "".join(f"<option>{html.escape(str(v))}</option>" for v in dict.fromkeys(values))


def build_report(db: sqlite_utils.Database, seed: int = 0) -> tuple[str, int]:
    """The page's HTML and its number of feature cards."""
    runs = load_runs(db)
    runs["reference"] = [is_lexical(a, b) for a, b in zip(runs.explainer, runs.simulator, strict=True)]
    by_id = {r.run_id: r for r in runs.itertuples(index=False)}
    cards, data = [], []
    for feat in db.query(FEATURES_SQL):
        run = by_id.get(feat["run_id"])
        if run is None:
            continue
        untrusted = run.selftest_passed == 0 and not is_lexical(None, run.simulator)
        cards.append(_card(len(cards), run, feat, untrusted))
        data.append(compact_fragments(feat["fragments"]))
    page = resources.files("autointerp.results").joinpath("report_template.html").read_text()
    # Only the file's name: the report is shared, the folder it was made in is not.
    db_name = Path(db.conn.execute("PRAGMA database_list").fetchone()[2]).name
    slots = {
        "meta": html.escape(f"{len(cards)} features from {len(runs)} runs · database {db_name} · "
                            f"generated {dbm.now()}"),
        "banners": _banners(verdict_lines(db)),
        "summary": _summary_table(db, seed),
        "methods": _options(runs.method), "hooks": _options(runs.hook),
        "cards": "\n".join(cards), "data": script_json(data),
    }
    for name, value in slots.items():
        page = page.replace(f"<!--SLOT:{name}-->", value, 1)
    return page, len(cards)


def write_report(db: sqlite_utils.Database, path: Path, seed: int = 0) -> ReportSummary:
    page, n_cards = build_report(db, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return ReportSummary(path, n_cards, db["runs"].count, verdict_lines(db))
