"""Redraw curves.png from a curves.csv written by `autointerp patch` (not a test).

    python bench/replot_curves.py results/causal/ioi-50
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from autointerp.causal.curves import CurvePoint
from autointerp.causal.outputs import plot_curves


def main(folder: str, title: str) -> None:
    table = pd.read_csv(Path(folder) / "curves.csv")
    points = [CurvePoint(r.dictionary, r.method, float(r.param), int(r.n_patched), float(r.kl),
                         None if pd.isna(r.logit_diff) else float(r.logit_diff), float(r.edit_norm))
              for r in table.itertuples()]
    plot_curves(points, Path(folder) / "curves.png", title)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else
         "smollm2-135m resid.15, task ioi (50 prompts), metric kl")
