"""bench/gpu.sh --smoke: the GPU check runs end to end on CPU at tiny sizes and writes
its one JSON of figures, so it is ready the day a GPU is lent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.cli import cli_env

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_writes_its_figures(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--smoke", "--out", str(out)],
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["smoke"] is True and figures["device"] == "cpu"
    harvest = figures["harvest"]
    assert harvest["bare_tokens_per_s"] > 0 and harvest["harvest_tokens_per_s"] > 0
    assert 0 < harvest["ratio"] < 2
    assert [(t["d_model"], t["n_features"]) for t in figures["train"]] == [(32, 64), (36, 64)]
    for t in figures["train"]:
        assert t["train_tokens_per_s"] > 0 and 0 < t["floor_share"] < 2
    score = figures["score"]
    assert score["features"] == 2 and score["features_per_minute"] > 0 and score["calls"] > 2
