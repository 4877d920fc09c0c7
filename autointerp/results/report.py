"""report.html: one self-contained static page (inline CSS and JS, no CDN, works
offline) with every feature of every run: explanation, score, top fragments shaded
by true activation and scoring fragments with simulated beside true activations; for
detection and fuzzing, each example with the judge's verdict beside the truth; per
feature a histogram of its activations and the output tokens its decoder direction
promotes and suppresses (logit_lens.py, where the model loads).

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
from autointerp.results.output_columns import score_html, steered_html

FEATURES_SQL = """
SELECT run_id, feature, status, reason, explanation, explanations, score, score_top,
       score_random, score_spread, constant, fragments, auroc, metrics
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
    verdicts = [[[str(t) for t in x["tokens"]], list(x["marks"]), x["label"], x["answer"],
                 _num(x["p1"]), x["quantile"], _num(x["max_activation"])]
                for x in (frags.get("examples") or [[]])[0]]
    return {"e": explainer, "s": scoring, **({"v": verdicts} if verdicts else {})}


def script_json(obj) -> str:
    """JSON that can sit inside <script> without ending it or being read as markup."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in SCRIPT_ESCAPES.items():
        text = text.replace(char, escaped)
    return text


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _histogram_svg(frags: dict) -> str:
    """Inline bars of the feature's non-zero activations (numbers only reach the SVG)."""
    h = frags.get("histogram") or {}
    counts = h.get("counts") or []
    if not counts:
        return ""
    top, w = max(counts), 6
    bars = "".join(f'<rect x="{i * w}" y="{40 - 40 * c / top:.1f}" width="{w - 1}" '
                   f'height="{40 * c / top:.1f}"/>' for i, c in enumerate(counts))
    return (f'<div class="hist"><svg width="{len(counts) * w}" height="40" role="img" '
            f'aria-label="activation histogram">{bars}</svg><span>non-zero activations '
            f'{h["edges"][0]:.3g} to {h["edges"][-1]:.3g}, in {h["n_fragments"]} held-out '
            f'fragments; fires in {h["n_nonzero"]} eval fragments</span></div>')


def _lens_html(lens) -> str:
    e = html.escape
    if lens is None:
        return ""
    if isinstance(lens, str):
        return f'<p class="lens">decoder tokens unavailable: {e(lens)}</p>'

    def items(pairs):
        return ", ".join(f"<code>{e(repr(tok))}</code> {v:+.2f}" for tok, v in pairs)
    return (f'<p class="lens">decoder promotes {items(lens.promoted)}<br>'
            f'suppresses {items(lens.suppressed)}</p>')


def _score_html(run, feat: dict) -> str:
    if (steered := score_html(run.scorer, feat)) is not None:
        return steered
    if run.scorer == "simulation":
        return (f'<span class="score">score {_fmt(feat["score"])} (top {_fmt(feat["score_top"])}, '
                f'random {_fmt(feat["score_random"])})</span>')
    return (f'<span class="score">{run.scorer}: balanced accuracy {_fmt(feat["score"])}, '
            f'AUROC {_fmt(feat["auroc"])}</span>')


def _card(i: int, run, feat: dict, untrusted: bool, lens=None, np_id: str | None = None) -> str:
    e = html.escape
    scored = feat["status"] == "scored"
    badges = []
    if run.reference:
        badges.append('<span class="badge">lexical reference</span>')
    if feat["constant"]:
        badges.append('<span class="badge">constant simulation (scored 0)</span>')
    if untrusted:
        who = "simulator" if run.scorer == "simulation" else f"judge ({run.scorer})"
        badges.append(f'<span class="badge warn">{who} failed its self-test</span>')
    if scored:
        score = _score_html(run, feat)
    else:
        score = f'<span class="badge warn">failed: {e(feat["reason"] or "no reason recorded")}</span>'
    extra = ""
    samples = json.loads(feat["explanations"]) if feat["explanations"] else []
    if len(samples) > 1:
        items = "".join(f"<li>{e(str(s))}</li>" for s in samples)
        extra = (f'<details><summary>{len(samples)} explanations, score spread '
                 f'{_fmt(feat["score_spread"])}</summary><ul>{items}</ul></details>')
    sort_score = "" if feat["score"] is None or not scored else f'{feat["score"]:.6f}'
    classes = (f"card scorer-{e(run.scorer)}" + ("" if scored else " failed")
               + (" untrusted" if untrusted else ""))
    return (
        f'<article class="{classes}" data-i="{i}" data-method="{e(run.method)}" '
        f'data-hook="{e(str(run.hook))}" data-status="{e(feat["status"])}" '
        f'data-feature="{int(feat["feature"])}" data-score="{sort_score}">'
        f'<header><span class="method">{e(run.method)}</span>'
        f'<span>{e(str(run.hook))} · feature {int(feat["feature"])}</span>{score}{"".join(badges)}'
        f'<span class="meta">{e(run.scorer)} · {e(str(run.explainer))} / '
        f'{e(str(run.simulator))}</span>{_np_link(np_id, int(feat["feature"]))}</header>'
        f'<p class="expl">{e(feat["explanation"] or "(no explanation)")}</p>{extra}'
        f'{_histogram_svg(json.loads(feat["fragments"] or "{}"))}{_lens_html(lens)}'
        f'{steered_html(run.scorer, json.loads(feat["fragments"] or "{}"), feat.get("metrics"))}'
        '<div class="top-frags"></div>'
        f'<details class="scoring"><summary>{SUMMARIES.get(run.scorer, run.scorer)}</summary>'
        '<div class="scoring-frags"></div></details></article>')


def _np_link(np_id: str | None, feature: int) -> str:
    """The feature's Neuronpedia page (built offline from the dictionary's id)."""
    if not np_id:
        return ""
    from autointerp.dictionaries.neuronpedia import feature_url

    return (f'<a class="np" href="{html.escape(feature_url(np_id, feature))}" target="_blank" '
            'rel="noopener noreferrer">Neuronpedia</a>')


def _neuronpedia_ids(db, dictionary_ids) -> dict:
    """Dictionary id -> its Neuronpedia id (None when it has none)."""
    from autointerp.dictionaries.neuronpedia import neuronpedia_id

    out = {}
    for dict_id in set(dictionary_ids):
        row = next(db.query("select meta from dictionaries where id = ?", [dict_id]), None)
        out[dict_id] = neuronpedia_id(json.loads(row["meta"] or "{}")) if row else None
    return out


SUMMARIES = {"simulation": "scoring fragments: simulated beside true",
             "detection": "detection examples: the judge's verdict beside the truth",
             "fuzzing": "fuzzing examples (marked tokens underlined): verdict beside truth"}


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


def _decoder_tokens(db, by_id: dict, feats: list[dict]) -> dict:
    """Per dictionary id: {feature: DecoderTokens}, or why there are none."""
    from autointerp.results.logit_lens import decoder_tokens

    wanted: dict[str, set[int]] = {}
    for f in feats:
        wanted.setdefault(by_id[f["run_id"]].dictionary_id, set()).add(int(f["feature"]))
    out, models = {}, {}
    for dict_id, features in wanted.items():
        row = next(db.query("select path from dictionaries where id = ?", [dict_id]), None)
        path = row["path"] if row else None
        out[dict_id] = (decoder_tokens(path, sorted(features), models=models) if path and
                        Path(path).exists() else "the dictionary file is not on this machine")
    return out


def build_report(db: sqlite_utils.Database, seed: int = 0,
                 decoder_tokens: bool = True) -> tuple[str, int]:
    """The page's HTML and its number of feature cards."""
    runs = load_runs(db)
    runs["reference"] = [is_lexical(a, b) for a, b in zip(runs.explainer, runs.simulator, strict=True)]
    by_id = {r.run_id: r for r in runs.itertuples(index=False)}
    feats = [f for f in db.query(FEATURES_SQL) if f["run_id"] in by_id]
    lenses = _decoder_tokens(db, by_id, feats) if decoder_tokens else {}
    np_ids = _neuronpedia_ids(db, runs.dictionary_id)
    cards, data = [], []
    for feat in feats:
        run = by_id[feat["run_id"]]
        untrusted = run.selftest_passed == 0 and not is_lexical(None, run.simulator)
        lens = lenses.get(run.dictionary_id)
        lens = lens if isinstance(lens, str) or lens is None else lens.get(int(feat["feature"]))
        cards.append(_card(len(cards), run, feat, untrusted, lens, np_ids.get(run.dictionary_id)))
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


def write_report(db: sqlite_utils.Database, path: Path, seed: int = 0,
                 decoder_tokens: bool = True) -> ReportSummary:
    page, n_cards = build_report(db, seed, decoder_tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return ReportSummary(path, n_cards, db["runs"].count, verdict_lines(db))
