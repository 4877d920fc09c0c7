"""The CLI reference (docs/cli.md) is generated from the typer app, so it cannot drift from
the commands: regenerate it and compare with the committed page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "cli.md"


def generate(out: Path) -> str:
    """What `make cli-docs` writes, into `out`."""
    subprocess.run([sys.executable, "-m", "typer", "autointerp.cli", "utils", "docs",
                    "--name", "autointerp", "--output", str(out)],
                   cwd=ROOT, check=True, capture_output=True, text=True, timeout=120)
    return out.read_text()


def test_cli_reference_is_current(tmp_path):
    fresh = generate(tmp_path / "cli.md")
    assert "## `autointerp score`" in fresh and "--scoring-backend" in fresh
    assert COMMITTED.read_text() == fresh, (
        "docs/cli.md is stale: the CLI's commands or options changed. "
        "Regenerate it with `make cli-docs` and commit docs/cli.md.")

