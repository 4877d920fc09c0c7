"""`autointerp report`: one self-contained HTML page with every scored feature."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from autointerp.cli import app
from autointerp.cli.display import print_verdicts
from autointerp.cli.options import DEFAULT_DB, DbOpt, SeedOpt

OutFileOpt = Annotated[Path, typer.Option("--out", help="The HTML file to write.")]


@app.command()
def report(db: DbOpt = DEFAULT_DB, out: OutFileOpt = Path("results/report.html"),
           seed: SeedOpt = 0) -> None:
    """Write a static, offline HTML browser of every feature: explanation, score, fragments."""
    from autointerp.db import open_db
    from autointerp.results.report import write_report

    summary = write_report(open_db(db), out, seed)
    console = Console()
    print_verdicts(console, summary.verdicts)
    console.print(f"report: {summary.path} ({summary.n_cards} features from {summary.n_runs} runs)",
                  markup=False, highlight=False)
