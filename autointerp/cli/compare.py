"""`autointerp compare`: the method comparison table, differences and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from autointerp.cli import app
from autointerp.cli.options import DEFAULT_DB, DbOpt, SeedOpt

OutDirOpt = Annotated[Path, typer.Option("--out", help="Folder for table.md, table.csv, "
                                         "differences.md and scores.png.")]


def print_verdicts(console: Console, verdicts: list[str]) -> None:
    """The self-test verdicts, a failure in bold red so nobody reads past it."""
    for line in verdicts:
        style = "bold red" if line.startswith("WARNING") else "green" if \
            line.startswith("Self-test passed") else "yellow"
        console.print(line, style=style, markup=False, highlight=False)


@app.command()
def compare(db: DbOpt = DEFAULT_DB, out: OutDirOpt = Path("results"), seed: SeedOpt = 0) -> None:
    """Compare methods: mean score per run with 95% bootstrap CIs, pairwise differences, plot."""
    from autointerp.compare import display_rows, write_comparison
    from autointerp.db import open_db

    result = write_comparison(open_db(db), out, seed)
    console = Console()
    rows = display_rows(result.table)
    table = Table(title="Interpretability score by method", show_lines=False)
    columns = [c for c in rows[0] if c not in ("model", "layer")]  # the hook names the layer
    for col in columns:
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*(r[c] for c in columns), style="dim" if "lexical" in r["method"] else None)
    console.print(table)
    print_verdicts(console, result.verdicts)
    for name, path in result.paths.items():
        console.print(f"{name}: {path}", markup=False, highlight=False)
