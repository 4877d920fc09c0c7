"""Shareable outputs name no folder of the machine that made them:
the demo's provenance and the report record paths relative to the working directory,
or only a name, and the committed reference run holds no machine path."""

from __future__ import annotations

import re
from pathlib import Path

from autointerp.demo import DemoConfig, _provenance, portable_path
from autointerp.results.report import build_report
from tests.support.data import make_results_db

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"
MACHINE_PATH = re.compile(r"(/tmp/|/home/|/root/|/work/|/Users/|[A-Z]:\\\\)")


def test_demo_provenance_has_no_machine_path(tmp_path, monkeypatch):
    cfg = DemoConfig(out=tmp_path / "outside", db=tmp_path / "outside" / "r.db", n_features=3)
    text = str(_provenance(cfg, {"score": 1.0}, {"score": 1.0}))
    assert str(tmp_path) not in text and not MACHINE_PATH.search(text)
    assert "--out <...>/outside" in cfg.command() and "--n-sampled 3" in cfg.command()
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "results" / "x") == "results/x"
    assert DemoConfig(out=tmp_path / "results").command() == "autointerp demo --out results"


def test_report_names_its_database_without_its_folder(tmp_path):
    (tmp_path / "deep").mkdir()
    page, _ = build_report(make_results_db(tmp_path / "deep" / "results.db",
                                           llm_selftest_passed=True))
    assert "database results.db" in page and str(tmp_path) not in page


def test_committed_reference_outputs_hold_no_machine_path():
    files = [p for p in REFERENCE.iterdir() if p.suffix in (".json", ".html", ".md", ".csv")]
    assert {p.name for p in files} >= {"demo_run.json", "report.html", "table.md"}
    for p in files:
        found = MACHINE_PATH.search(p.read_text(encoding="utf-8"))
        assert found is None, f"{p.name}: {found.group(0)}"
