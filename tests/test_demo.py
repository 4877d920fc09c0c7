"""The demo end to end at toy size: a tiny random Llama (tests/conftest.py) is both the
subject model and the in-process explainer and simulator, so every step runs for real
(harvest, random-init control, SAE and baselines, self-test, LLM and lexical scoring,
compare, report) in about a minute; a rerun must reuse everything."""

from __future__ import annotations

import html
import json

import pandas as pd

from autointerp.demo import BASELINES, DemoConfig, run_demo
from autointerp.store import ActivationStore


def _counts(db_path) -> dict[str, int]:
    from autointerp.db import open_db

    db = open_db(db_path)
    return {t: db[t].count for t in ("llm_calls", "runs", "features", "selftests", "dictionaries")}


def test_demo_runs_everything_and_reuses_it(tiny_llama_dir, tmp_path):
    # seed 1 puts a held-out document early in the builtin corpus, so 30k tokens of the
    # tiny tokenizer leave enough eval fragments.
    cfg = DemoConfig(out=tmp_path / "results", model=str(tiny_llama_dir), layer=1,
                     n_tokens=30_000, train_tokens=8192, n_fit=2000, n_features=1,
                     llm=str(tiny_llama_dir), seed=1)
    first = run_demo(cfg)
    for name in ("table.md", "table.csv", "differences.md", "scores.png", "report.html",
                 "database", "demo_run.json"):
        assert first.paths[name].exists() and first.paths[name].stat().st_size > 0, name
    random_store = ActivationStore(first.paths["store (random-init)"])
    trained_store = ActivationStore(first.paths["store (trained)"])
    assert random_store.meta["random_init"] == 1 and trained_store.meta["random_init"] is None
    assert random_store.meta["model_hash"] != trained_store.meta["model_hash"]

    table = pd.read_csv(first.paths["table.csv"])
    methods = ["topk", *BASELINES, "topk, random-init model"]
    assert sorted(table.method) == sorted(methods + [f"{m} (lexical)" for m in methods])
    assert (table.n_scored + table.n_failed == 1).all()
    llm_rows = table[~table.reference]
    assert set(llm_rows.simulator) == {f"llm:inprocess:{tiny_llama_dir}"}
    assert set(llm_rows.simulator_mode) == {"all-at-once"}  # one forward pass per fragment

    # The demo states what the self-test found, in the table and the report.
    md = first.paths["table.md"].read_text()
    llm_verdict = [v for v in first.verdicts if f"simulator llm:inprocess:{tiny_llama_dir}" in v]
    assert len(llm_verdict) == 1 and md.startswith("> ")
    assert llm_verdict[0] in md.split("# Interpretability")[0]
    assert html.escape(llm_verdict[0]) in first.paths["report.html"].read_text()
    provenance = json.loads(first.paths["demo_run.json"].read_text())
    assert provenance["config"]["n_features"] == 1 and provenance["seconds"]["total"] > 0

    before = _counts(first.paths["database"])
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "demo").rglob("*.safetensors")}
    second = run_demo(cfg)
    assert _counts(second.paths["database"]) == before  # no new calls, runs or features
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained
    assert second.seconds["harvest"] + second.seconds["dictionaries"] < first.seconds["harvest"]
    assert second.verdicts == first.verdicts
