"""Exports benchmark (not a test): a 300-feature lexical run exported as Neuronpedia
upload batches and read back by `score --explanations`, timed step by step.

    python bench/exports.py [--features 300] [--work /tmp/autointerp-exports]

A planted store (tests/support/data.make_planted, 120 fragments of 64 tokens) and a dictionary
of 400 random unit directions over it, so every feature is eligible. Prints the seconds of
each command (in process, after imports), the batch sizes, and whether every feature row
of the re-scored run equals the original's (status and all three scores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autointerp.cli import app  # noqa: E402
from autointerp.dictionaries.dictionary import Dictionary  # noqa: E402
from tests.support.data import make_planted  # noqa: E402

ROWS = ("select feature, status, score, score_top, score_random from features "
        "where run_id = ? order by feature")


def timed(*args) -> float:
    start = time.perf_counter()
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None:
        raise result.exception
    return round(time.perf_counter() - start, 2)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--features", type=int, default=300)
    p.add_argument("--work", type=Path, default=Path("/tmp/autointerp-exports"))
    a = p.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    store, _, _ = make_planted(a.work, n_fragments=120)
    W = torch.randn(400, 16, generator=torch.Generator().manual_seed(0))
    W = W / W.norm(dim=1, keepdim=True)
    d = Dictionary(W, torch.zeros(400), W.clone(), torch.zeros(16),
                   meta={"method": "random-dirs", "model": "test-model", "hook": "resid.0",
                         "layer": 0, "store": str(store)}).save(a.work / "dict")
    db, out = a.work / "results.db", a.work / "np"
    lexical = ["--explainer", "lexical", "--scoring-backend", "lexical", "--no-selftest",
               "--n-sampled", str(a.features)]
    figures = {"score_s": timed("score", "--dict", d, "--db", db, *lexical)}
    con = sqlite3.connect(db)
    run = con.execute("select id from runs").fetchone()[0]
    figures["export_neuronpedia_s"] = timed("export", "neuronpedia", "--db", db, "--run", run,
                                            "--out", out, "--no-logits")
    figures["rescore_s"] = timed("score", "--dict", d, "--db", db, *lexical,
                                 "--explanations", out)
    given = con.execute("select id from runs where explainer = 'given:ours'").fetchone()[0]
    before, after = con.execute(ROWS, [run]).fetchall(), con.execute(ROWS, [given]).fetchall()
    figures.update(
        n_features=len(before), n_scored=sum(r[1] == "scored" for r in before),
        identical_rows=before == after,
        batch_sizes=[len(json.loads(b.read_text())["features"])
                     for b in sorted(out.glob("batch-*.json"))],
        export_mb=round(sum(f.stat().st_size for f in out.iterdir()) / 1e6, 1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
