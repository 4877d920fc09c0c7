"""`autointerp baseline`: fit PCA, ICA, the neuron basis or random directions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autointerp.cli import app
from autointerp.cli.options import Method, OverwriteOpt, SeedOpt


@app.command()
def baseline(
    acts: Annotated[Path, typer.Option("--acts", help="Activation store folder (from `autointerp harvest`).")],
    method: Annotated[Method, typer.Option("--method", help="Baseline directions: principal components, independent components, the neuron basis or random directions.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dictionary to.")],
    seed: SeedOpt = 0,
    n_fit: Annotated[int, typer.Option(
        "--n-fit", help="Training activations sampled to fit on (all of them when fewer).")] = 100_000,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fit a baseline dictionary; each direction gives two features, ReLU(+proj) and ReLU(-proj)."""
    from autointerp.baselines.directions import fit_from_store
    from autointerp.cli.display import print_dictionary
    from autointerp.harvest.store import ActivationStore

    method = method.value
    with typer_status(f"fitting {method}"):
        dictionary, reused = fit_from_store(ActivationStore(acts), out, method, seed, n_fit, overwrite)
    if reused:
        typer.echo(f"{out} already holds this dictionary; nothing to do")
    print_dictionary(dictionary, out)


def typer_status(text: str):
    """A spinner while a fit that has no natural progress steps runs."""
    from rich.console import Console

    return Console(stderr=True).status(text)
