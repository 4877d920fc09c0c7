"""What several commands print the same way (not a command module: commands import it,
never each other)."""

from __future__ import annotations

from rich.console import Console


def print_verdicts(console: Console, verdicts: list[str]) -> None:
    """The self-test verdicts, a failure in bold red so nobody reads past it."""
    for line in verdicts:
        style = "bold red" if line.startswith("WARNING") else "green" if \
            line.startswith("Self-test passed") else "yellow"
        console.print(line, style=style, markup=False, highlight=False)
