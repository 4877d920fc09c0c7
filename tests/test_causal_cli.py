"""`autointerp patch` end to end on a tiny random GPT-2: curves.csv with the none and
all-patched points, curves.png, costs, the database record, and the task-check warning."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from autointerp import db as dbm
from autointerp.baselines.directions import fit_baseline
from autointerp.causal import forward
from autointerp.causal.tasks import make_ioi, tokenize_pairs, write_pairs
from autointerp.cli import app
from autointerp.dictionaries.dictionary import Dictionary
from autointerp.harvest.hooks import parse_hook
from autointerp.harvest.models import load_causal_lm
from tests.support.models import build_tiny_gpt2, single_torch_thread

one_thread = pytest.fixture(autouse=True)(single_torch_thread)


@pytest.fixture(scope="module")
def dicts(tmp_path_factory):
    root = tmp_path_factory.mktemp("patch-cli")
    model = str(build_tiny_gpt2(root / "model", scale=20))
    loaded = load_causal_lm(model, device="cpu", dtype="float32")
    batch = tokenize_pairs(loaded.tokenizer, make_ioi(loaded.tokenizer, 20, seed=5))
    x = forward.run(loaded, batch.clean_ids, batch.mask, read=parse_hook("resid.1", 2))
    meta = {"model": model, "hook": "resid.1", "layer": 1}
    pca = fit_baseline("pca", x[batch.mask.bool()], meta=meta).save(root / "pca")
    g = torch.Generator().manual_seed(0)
    W = torch.nn.functional.normalize(torch.randn(48, 32, generator=g), dim=1)
    sae = Dictionary(W, torch.full((48,), -0.2), W.clone(), torch.zeros(32),
                     meta={**meta, "method": "relu"}).save(root / "sae")
    return root, str(pca), str(sae)


def _patch(*args):
    result = CliRunner().invoke(app, ["patch", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_patch_writes_curves_plot_costs_and_record(dicts, tmp_path):
    root, pca, sae = dicts
    out, db = tmp_path / "out", tmp_path / "r.db"
    output = _patch("--dict", f"rotation:{pca}", "--dict", pca, "--dict", sae, "--task", "ioi",
                    "--n-prompts", "6", "--n-thresholds", "4", "--ig-steps", "3", "--out", str(out),
                    "--db", str(db), "--device", "cpu")
    assert "task check:" in output and "forward passes" in output
    table = pd.read_csv(out / "curves.csv")
    assert list(table.columns[:7]) == ["dictionary", "method", "param", "n_patched", "kl",
                                       "logit_diff", "edit_norm"]
    assert set(table["dictionary"]) == {"pca rotation", "pca", "relu"}
    assert set(table["method"]) == {"none", "all", "greedy", "grad", "ig"}
    rot = table[table.dictionary == "pca rotation"]
    assert float(rot[rot.method == "all"].kl.iloc[0]) < 1e-5
    assert int(rot[rot.method == "all"].n_patched.iloc[0]) == 32
    none = table[table.method == "none"].kl
    assert none.max() - none.min() < 1e-6 and none.iloc[0] > 1e-3  # same clean run for all
    assert (out / "curves.png").stat().st_size > 10_000
    costs = json.loads((out / "costs.json").read_text())["costs"]
    greedy = [c for c in costs if c["method"] == "greedy"]
    assert len(greedy) == 3 and all(c["forward_passes"] > 0 for c in greedy)
    ig = [c for c in costs if c["method"] == "ig" and c["dictionary"] == "pca rotation"][0]
    # 3 gradient passes, then the 6 top-k points (k = 1, 2, 4, ..., 32) x 6 prompts fit in
    # one batched pass of at most 64 sequences
    assert ig["forward_passes"] == 3 + 1
    row = next(dbm.open_db(db)["causal_runs"].rows)
    assert row["kind"] == "patch" and row["hook"] == "resid.1"
    assert len(json.loads(row["summary"])["points"]) == len(table)


def test_a_model_failing_the_task_check_is_warned_on_every_output(dicts, tmp_path):
    root, pca, _ = dicts
    loaded = load_causal_lm(str(root / "model"), device="cpu", dtype="float32")
    tok = loaded.tokenizer
    pairs = make_ioi(tok, 8, seed=2)
    batch = tokenize_pairs(tok, pairs)
    logits = loaded.model(batch.clean_ids, attention_mask=batch.mask).logits
    last = logits[torch.arange(8), batch.last, 2:]  # no special tokens
    best, worst = last.argmax(-1) + 2, last.argmin(-1) + 2
    # answers the model ranks first (passes) and last (fails), as single word tokens
    good = [p.__class__(p.clean, p.counterfactual, tok.decode([int(b)]), tok.decode([int(w)]))
            for p, b, w in zip(pairs, best, worst, strict=True)]
    bad = [p.__class__(p.clean, p.counterfactual, p.distractor, p.answer) for p in good]
    results = []
    for name, chosen in (("good", good), ("bad", bad)):
        write_pairs(chosen, tmp_path / f"{name}.jsonl")
        _patch("--dict", f"rotation:{pca}", "--select", "grad", "--device", "cpu", "--task",
               str(tmp_path / f"{name}.jsonl"), "--out", str(tmp_path / name), "--db",
               str(tmp_path / f"{name}.db"))
        row = next(dbm.open_db(tmp_path / f"{name}.db")["causal_runs"].rows)
        table = pd.read_csv(tmp_path / name / "curves.csv", keep_default_na=False)
        results.append((json.loads(row["task_check"]), row["warning"], set(table["warning"])))
    (good_check, good_warning, good_column), (bad_check, bad_warning, bad_column) = results
    assert good_check["passed"] and good_check["accuracy"] == 1 and good_warning == ""
    assert good_column == {""}
    assert not bad_check["passed"] and bad_check["accuracy"] == 0
    assert "WARNING" in bad_warning and bad_column == {bad_warning}


def test_dictionaries_at_different_hooks_are_refused(dicts, tmp_path):
    root, pca, _ = dicts
    other = Dictionary.__new__(Dictionary)
    from autointerp.dictionaries.sources import load_dictionary
    other = load_dictionary(pca)
    other.meta["hook"] = "resid.0"
    other.save(tmp_path / "pca0")
    result = CliRunner().invoke(app, ["patch", "--dict", pca, "--dict", str(tmp_path / "pca0"),
                                      "--task", "ioi", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "disagree on" in str(result.exception)
