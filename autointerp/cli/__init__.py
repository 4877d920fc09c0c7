"""The `autointerp` console script. One module per command, each about 25 lines:
build a config, call the library."""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import typer

from autointerp.errors import AutointerpError

app = typer.Typer(
    help="Measure how interpretable the features of a language model's activations are.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module registers its command(s) on `app` when imported.
COMMAND_MODULES = [
    "harvest", "train", "baseline", "inspect", "score", "selftest", "compare", "report", "demo",
    "patch", "circuit", "export",
]


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    if debug:
        os.environ["AUTOINTERP_DEBUG"] = "1"


for _name in COMMAND_MODULES:
    try:
        importlib.import_module(f"autointerp.cli.{_name}")
    except ModuleNotFoundError as e:  # a command still being written must not break the rest
        if e.name != f"autointerp.cli.{_name}":
            raise


def quiet_library_warnings() -> None:
    """Deprecation notices from the libraries underneath (torch, transformers, sklearn,
    ...) address this package's developers, not its users, who can do nothing about
    them: keep them out of the CLI's output (`--debug` shows them)."""
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)


# The parser's errors: typer's own since it vendors click, click's before that.
USAGE_ERRORS = getattr(typer, "TyperException", None) or importlib.import_module("click").ClickException


def main() -> None:
    debug = "--debug" in sys.argv or os.environ.get("AUTOINTERP_DEBUG") == "1"
    if not debug:
        quiet_library_warnings()
    try:
        code = app(standalone_mode=False)
    except USAGE_ERRORS as e:  # a bad option or value: one line, as our own errors
        if type(e).__name__ == "NoArgsIsHelpError":  # `autointerp` alone: the help
            e.show()
            sys.exit(0)
        if debug:
            raise
        # typer validates choices through pydantic, whose message starts "Value error, ".
        message = e.format_message().replace("Value error, ", "")
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except AutointerpError as e:
        if debug:
            raise
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:  # --help and the like return their exit code
        sys.exit(code)
