"""The HTML report, opened in a real headless Chromium: it renders without JavaScript
errors, shows one card per feature, filters and sorts, keeps corpus text as text,
and carries the self-test verdict."""

from __future__ import annotations

import html
import json
import re

import matplotlib.image
import numpy as np
import pytest

from autointerp.results.report import compact_fragments, script_json, write_report
from tests.support.browser import chromium
from tests.support.data import NASTY_TOKEN, make_results_db


def js_status(dom: str) -> dict:
    found = re.search(r'<div id="js-status">([^<]*)</div>', dom)
    assert found, "the page's script never wrote its status"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture
def failing_report(tmp_path):
    db = make_results_db(tmp_path / "fail.db", llm_selftest_passed=False)
    summary = write_report(db, tmp_path / "report.html")
    n_features = db["features"].count
    return summary, n_features, db


def test_report_renders_every_card_without_js_errors(failing_report, tmp_path):
    summary, n_features, _ = failing_report
    assert summary.n_cards == n_features == 52
    dom = chromium(summary.path, tmp_path, "--dump-dom")
    status = js_status(dom)
    assert status["errors"] == []
    assert status["cards"] == status["shown"] == n_features
    assert status["fragments"] == n_features * 5  # 2 explainer + 3 scoring fragments each
    # Corpus text stayed text: the planted markup is in the DOM escaped, never as elements.
    assert "<img" not in dom and "<b>" not in dom
    assert dom.count('&lt;/script&gt;&lt;img src=x onerror="window.pwned=1"&gt;') == n_features * 5
    assert dom.count("&lt;b&gt;topk&lt;/b&gt; feature") == 24
    assert '<div class="banner fail">WARNING: simulator inprocess:tiny' in dom
    assert dom.count("simulator failed its self-test</span>") == 42  # the non-lexical cards


def test_report_screenshot_shows_the_warning_banner(failing_report, tmp_path):
    summary, _, _ = failing_report
    shot = tmp_path / "report.png"
    chromium(summary.path, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000",
             fragment="#expand")
    image = matplotlib.image.imread(shot)[..., :3]
    assert image.shape[:2] == (2000, 1280)
    banner = np.all(np.abs(image - np.array([1.0, 0.839, 0.839])) < 0.02, axis=-1)
    assert banner[:400].sum() > 20_000  # the red banner is drawn near the top
    shading = np.all(np.abs(image - np.array([1.0, 0.549, 0.0])) < 0.05, axis=-1)
    assert shading.sum() > 500  # tokens at their feature's peak are full orange


def test_report_filters_and_sorts_from_the_link(failing_report, tmp_path):
    summary, _, db = failing_report
    want = sorted((r["score"] for r in db.query(
        "SELECT f.score FROM features f JOIN runs r ON r.id = f.run_id WHERE r.label = 'topk' "
        "AND f.status = 'scored' AND f.score >= 0.3")), )
    dom = chromium(summary.path, tmp_path, "--dump-dom",
                   fragment="#method=topk&min=0.3&sort=score-asc&status=scored")
    status = js_status(dom)
    assert status["errors"] == [] and status["shown"] == len(want) > 0
    cards = re.findall(r'<article class="[^"]*" data-i="\d+" data-method="([^"]*)" '
                       r'data-hook="[^"]*" data-status="[^"]*" data-feature="\d+" '
                       r'data-score="([^"]*)"(?: style="([^"]*)")?', dom)
    shown = [(m, float(s)) for m, s, style in cards if "display: none" not in style]
    assert [m for m, _ in shown] == ["topk"] * len(want)
    assert [s for _, s in shown] == pytest.approx(want, abs=1e-6)


def test_passed_selftest_report_has_no_warning(tmp_path):
    db = make_results_db(tmp_path / "pass.db", llm_selftest_passed=True)
    page = write_report(db, tmp_path / "report.html").path.read_text()
    assert 'class="banner fail"' not in page and "simulator failed its self-test" not in page
    assert page.count('<div class="banner pass">Self-test passed') == 1
    assert page.count('<div class="banner note">Note: the self-test does not apply') == 1


def test_fragment_json_cannot_end_the_script_block():
    frags = compact_fragments(json.dumps({
        "n_top": 1,
        "explainer": [{"tokens": [NASTY_TOKEN, "\u2028"], "activations": [1.0, float("nan")]}],
        "scoring": [{"tokens": ["a"], "activations": [0.5]}, {"tokens": ["b"], "activations": [0]}],
        "simulations": [[[3], [1]], [[9], [9]]]}))
    text = script_json([frags])
    assert "<" not in text and ">" not in text and "\u2028" not in text
    assert json.loads(text) == [{"e": [[[NASTY_TOKEN, "\u2028"], [1.0, None]]],
                                 "s": [[["a"], [0.5], [3.0], "top"], [["b"], [0.0], [1.0], "random"]]}]


def test_detection_cards_show_verdicts_beside_truth(tmp_path):
    """A lexical run with every scorer: each detection and fuzzing card lists its examples
    with the verdict beside the truth, and every card its activation histogram."""
    import asyncio

    from autointerp.db import open_db
    from autointerp.scoring.pipeline import ScoreConfig, score_dictionary_runs
    from autointerp.scoring.scorers.lexical import LexicalExplainer, LexicalSimulator
    from tests.support.data import sparse_planted

    _, dict_path = sparse_planted(tmp_path, n_fragments=200, lexical=True)
    db = open_db(tmp_path / "r.db")
    asyncio.run(score_dictionary_runs(ScoreConfig(dict_path, scorers=("all",), selftest=False),
                                      LexicalExplainer(), LexicalSimulator(), db))
    summary = write_report(db, tmp_path / "report.html")
    assert summary.n_cards == 12
    page = summary.path.read_text()
    assert page.count('aria-label="activation histogram"') == 12
    assert page.count("decoder tokens unavailable") == 12  # "test-model" does not load here
    dom = chromium(summary.path, tmp_path, "--dump-dom", fragment="#expand")
    status = js_status(dom)
    assert status["errors"] == [] and status["cards"] == 12
    n_verdicts = sum(len(json.loads(r["fragments"])["examples"][0]) for r in db.query(
        "select fragments from features f join runs r on r.id = f.run_id "
        "where r.scorer != 'simulation'"))
    assert dom.count('class="frag verdict ') == n_verdicts > 0
    assert dom.count("truth 1 · said 1") > 0 and "balanced accuracy 1.000, AUROC 1.000" in dom
