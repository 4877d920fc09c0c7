"""Read curves.csv files written by `autointerp patch` and print, per dictionary and
selection method, the fewest patched features (and that point's edit magnitude) at which
the KL to the counterfactual fell to a given level. Used for the README's figures."""

from __future__ import annotations

import sys

import pandas as pd


def first_below(rows: pd.DataFrame, level: float) -> str:
    hit = rows[rows.kl <= level].sort_values("n_patched")
    if hit.empty:
        return "never"
    best = hit.iloc[0]
    return f"{int(best.n_patched)} ({best.edit_norm:.1f})"


def main(paths: list[str], levels=(2.0, 1.0, 0.5, 0.1)) -> None:
    table = pd.concat([pd.read_csv(p) for p in paths])
    none = table[table.method == "none"].kl.iloc[0]
    print(f"KL none patched: {none:.3f}; cells: fewest features (edit L2) with KL <= level")
    print("| dictionary | method | active | " + " | ".join(f"KL <= {v}" for v in levels) + " |")
    print("|---" * (3 + len(levels)) + "|")
    for (d, m), rows in table[~table.method.isin(["none", "all"])].groupby(["dictionary", "method"], sort=False):
        n_all = int(table[(table.dictionary == d) & (table.method == "all")].n_patched.iloc[0])
        print(f"| {d} | {m} | {n_all} | " + " | ".join(first_below(rows, v) for v in levels) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
