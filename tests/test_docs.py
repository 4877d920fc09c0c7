"""The CLI reference (docs/cli.md) is generated from the typer app, so it cannot drift from
the commands: regenerate it and compare with the committed page.

The page is what `typer autointerp.cli utils docs --name autointerp` writes, made by the
same function (`typer.cli.get_docs_for_click`). That command itself cannot be used: it
executes a fresh copy of the `autointerp.cli` module, whose `app` never receives the
commands (each command module registers on the `app` of the module that `import` finds),
so its page would list no command. `make cli-docs` runs this file as a script."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "cli.md"


def cli_reference() -> str:
    """docs/cli.md's text, from the app the console script runs."""
    import click
    import typer.main
    from typer.cli import get_docs_for_click
    from typer.core import MARKUP_MODE_KEY

    from autointerp.cli import app

    command = typer.main.get_command(app)
    ctx = click.Context(command, obj={MARKUP_MODE_KEY: app.rich_markup_mode})
    return get_docs_for_click(obj=command, ctx=ctx, name="autointerp").strip() + "\n"


def test_cli_reference_is_current():
    fresh = cli_reference()
    assert "## `autointerp score`" in fresh and "--scoring-backend" in fresh
    assert COMMITTED.read_text() == fresh, (
        "docs/cli.md is stale: the CLI's commands or options changed. "
        "Regenerate it with `make cli-docs` and commit docs/cli.md.")


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else COMMITTED
    out.write_text(cli_reference())
    print(f"wrote {out}")
