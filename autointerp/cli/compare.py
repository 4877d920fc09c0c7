"""`autointerp compare`: the method comparison table, differences and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from autointerp.cli import app
from autointerp.cli.display import print_verdicts
from autointerp.cli.options import DEFAULT_DB, DbOpt, SeedOpt

OutDirOpt = Annotated[Path, typer.Option("--out", help="Folder for table.md, table.csv, "
                                         "differences.md and scores.png.")]


def terminal_table(rows: list[dict[str, str]]) -> Table:
    """The comparison narrowed to what fits a terminal; table.md has every column."""
    scorers = dict.fromkeys(f"{r['explainer']} / {r['simulator']}" for r in rows)
    table = Table(title="Interpretability score by method (full table: table.md)",
                  caption="explainer / simulator: " + "; ".join(scorers))
    for col in ("method", "hook", "scorer", "scored/failed", "score [95% CI]", "L0", "FVU",
                "self-test"):
        table.add_column(col, overflow="fold")
    for r in rows:
        score = r["score (95% CI)"].replace(" [", "\n[")
        table.add_row(r["method"], r["hook"], r["scorer"],
                      f"{r['scored']}/{r['failed']}", score, r["L0"], r["FVU"],
                      r["self-test"].split(":")[0],
                      style="dim" if "lexical" in r["method"] else None)
    return table


@app.command()
def compare(db: DbOpt = DEFAULT_DB, out: OutDirOpt = Path("results"), seed: SeedOpt = 0) -> None:
    """Compare methods: mean score per run with 95% bootstrap CIs, pairwise differences, plot."""
    from autointerp.db import open_db
    from autointerp.results.compare import display_rows, write_comparison

    result = write_comparison(open_db(db), out, seed)
    console = Console()
    console.print(terminal_table(display_rows(result.table)))
    print_verdicts(console, result.verdicts)
    for name, path in result.paths.items():
        console.print(f"{name}: {path}", markup=False, highlight=False)
