"""Options shared by several commands, declared once (typer `Annotated` style)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DbOpt = Annotated[Path, typer.Option("--db", help="Results and LLM-call cache database (SQLite).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present, else CPU), cpu or cuda.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output made with other arguments.")]

DEFAULT_DB = Path("results/autointerp.db")
