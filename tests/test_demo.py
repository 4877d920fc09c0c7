"""The demo end to end at toy size. A tiny random Llama (tests/conftest.py) is the subject
model and the in-process explainer and simulator, so every step runs for real: harvest,
random-init control, SAE and baselines, self-test, LLM and lexical scoring, compare and
report. A rerun must reuse everything."""

from __future__ import annotations

import dataclasses
import html
import json

import pandas as pd
import pytest

from autointerp.db import open_db
from autointerp.demo import BASELINES, SCORERS, DemoConfig, run_demo
from autointerp.harvest.store import ActivationStore

METHODS = ["topk", "random-sae", *BASELINES, "topk, random-init model"]


def _counts(db_path) -> dict[str, int]:
    db = open_db(db_path)
    return {t: db[t].count for t in ("llm_calls", "runs", "features", "selftests", "dictionaries")}


def _weights(out) -> dict:
    return {p: p.stat().st_mtime_ns for p in (out / "demo").rglob("*.safetensors")}


@pytest.fixture(scope="module")
def lexical_demo(tiny_llama_dir, tmp_path_factory):
    """The demo with the lexical scorer only (seconds). Seed 1 puts a held-out document
    early in the builtin corpus, so 30k tokens of the tiny tokenizer leave enough eval
    fragments."""
    cfg = DemoConfig(out=tmp_path_factory.mktemp("demo") / "results", model=str(tiny_llama_dir),
                     layer=1, n_tokens=30_000, train_tokens=8192, n_fit=2000, n_features=2,
                     llm=None, seed=1, output_score=False)
    return cfg, run_demo(cfg)


def test_demo_builds_every_row_and_reuses_it(lexical_demo):
    cfg, first = lexical_demo
    for name in ("table.md", "table.csv", "differences.md", "scores.png", "report.html",
                 "database", "demo_run.json"):
        assert first.paths[name].exists() and first.paths[name].stat().st_size > 0, name
    random_store = ActivationStore(first.paths["store (random-init)"])
    trained_store = ActivationStore(first.paths["store (trained)"])
    assert random_store.meta["random_init"] == 1 and trained_store.meta["random_init"] is None
    assert random_store.meta["model_hash"] != trained_store.meta["model_hash"]
    table = pd.read_csv(first.paths["table.csv"])
    for scorer in SCORERS:  # every dictionary scored every way
        rows = table[table.scorer == scorer]
        assert sorted(set(rows.method)) == sorted(f"{m} (lexical)" for m in METHODS), scorer
    assert table.run_id.nunique() == len(SCORERS) * len(METHODS)
    runs = table.groupby("run_id").agg(n_scored=("n_scored", "sum"), n_failed=("n_failed", "first"))
    assert (runs.n_scored + runs.n_failed == 2).all() and table.reference.all()
    # Dense baseline features are scored by detection and fuzzing, each row naming its rule.
    judged = table[table.scorer.isin(["detection", "fuzzing"])]
    baselines = judged[judged.method.isin([f"{m} (lexical)" for m in BASELINES])]
    assert baselines.n_scored.sum() == 2 * 2 * len(BASELINES)
    assert set(judged.negatives) <= {"zero", "threshold"} and "threshold" in set(baselines.negatives)
    assert table.ledger.str.startswith("lost ").all()
    md = first.paths["table.md"].read_text()
    assert "## Stability of each ordering" in md and "## Margin over the random floor" in md
    provenance = json.loads(first.paths["demo_run.json"].read_text())
    assert provenance["config"]["n_features"] == 2 and "--llm none" in provenance["command"]
    assert provenance["cpu_seconds"]["total"] > 0 and provenance["seconds"]["harvest"] > 0

    before, weights = _counts(first.paths["database"]), _weights(cfg.out)
    second = run_demo(cfg)
    assert _counts(second.paths["database"]) == before  # no new runs, features or calls
    assert _weights(cfg.out) == weights and len(weights) == len(METHODS)  # nothing refit
    assert second.seconds["harvest"] + second.seconds["dictionaries"] < first.seconds["harvest"]


def test_demo_llm_rows_state_the_selftest_verdict(lexical_demo, tiny_llama_dir):
    cfg, _ = lexical_demo
    weights = _weights(cfg.out)
    # The same stores and dictionaries, now scored by the in-process LLM (one feature each).
    llm_cfg = dataclasses.replace(cfg, llm=str(tiny_llama_dir), n_features=1,
                                  random_model=False, lexical=False)
    result = run_demo(llm_cfg)
    assert _weights(cfg.out) == weights
    table = pd.read_csv(result.paths["table.csv"])
    llm_rows = table[~table.reference]
    for scorer in SCORERS:
        assert sorted(set(llm_rows[llm_rows.scorer == scorer].method)) == \
            sorted(["topk", "random-sae", *BASELINES])
    assert set(llm_rows.simulator) == {f"llm:inprocess:{tiny_llama_dir}"}
    assert set(llm_rows.simulator_mode) == {"all-at-once"}  # auto picks one pass per fragment
    # The random weights cannot simulate: the self-test must say so, at the top of the
    # table and in the report, and mark those rows.
    verdict = [v for v in result.verdicts if f"simulator llm:inprocess:{tiny_llama_dir}" in v]
    assert len(verdict) == 1 and verdict[0].startswith("WARNING")
    md = result.paths["table.md"].read_text()
    assert md.startswith("> **WARNING") and verdict[0] in md.split("# Interpretability")[0]
    assert html.escape(verdict[0]) in result.paths["report.html"].read_text()
    assert set(llm_rows.selftest) == {"FAILED: scores not meaningful"}
