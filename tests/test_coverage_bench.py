"""bench/coverage.py on a small table in sae-lens's pretrained_saes.yaml format: each loader's
hook is decided offline and judged by our reader's own checks, refusals give their reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TABLE = {
    "gemma-scope-2b-pt-att": {"conversion_func": "gemma_2", "model": "gemma-2-2b",
                              "repo_id": "google/gemma-scope-2b-pt-att",
                              "saes": [{"id": "layer_3/width_16k/average_l0_71",
                                        "path": "layer_3/width_16k/average_l0_71"}]},
    "gemma-scope-2-1b-pt-transcoders": {
        "conversion_func": "gemma_3", "model": "google/gemma-3-1b-pt",
        "repo_id": "google/gemma-scope-2-1b-pt",
        "saes": [{"id": "layer_5_width_16k", "path": "transcoder_all/layer_5_width_16k"}]},
    "gpt2-small-res-jb": {"conversion_func": None, "model": "gpt2-small", "repo_id": "jbloom/x",
                          "config_overrides": {"model_from_pretrained_kwargs":
                                               {"center_writing_weights": True}},
                          "saes": [{"id": "blocks.4.hook_resid_pre", "path": "blocks.4"}]},
    "gpt2-head": {"conversion_func": None, "model": "gpt2-small", "repo_id": "x/y",
                  "saes": [{"id": "blocks.4.attn.hook_q", "path": "q"}]},
    "temporal-x": {"conversion_func": "temporal", "model": "gemma-2-2b", "repo_id": "x/t",
                   "saes": [{"id": "layer_12", "path": "layer_12"}]},
}


def test_coverage_counts_and_reasons(tmp_path):
    table = tmp_path / "pretrained_saes.yaml"
    table.write_text(yaml.safe_dump(TABLE))
    result = subprocess.run([sys.executable, str(REPO / "bench" / "coverage.py"), "--table",
                             str(table)], capture_output=True, text=True, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "5 SAEs in 5 releases; accepted 3 (60.0%)" in lines[0]
    assert "gemma_2 | blocks.L.attn.hook_z | 1 | accepted" in lines
    assert "gemma_3 | blocks.L.hook_mlp_in | 1 | accepted" in lines
    assert any("blocks.L.attn.hook_q" in ln and "no equivalent" in ln for ln in lines)
    assert any(ln.startswith("temporal") and "earlier tokens" in ln for ln in lines)
