"""`autointerp inspect`: a dictionary's metadata and evaluation metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autointerp.cli import app
from autointerp.cli.display import print_dictionary


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="Dictionary folder (ours, sae-lens, sparsify, Gemma Scope), hf:ORG/REPO/PATH or saelens:RELEASE/SAE_ID.")],
    acts: Annotated[Path | None, typer.Option(
        "--acts", help="Also evaluate on this activation store's eval part.")] = None,
    loss: Annotated[bool, typer.Option(
        "--loss-recovered", help="Also measure loss recovered with the store's model (needs --acts).")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda (for --loss-recovered).")] = "auto",
) -> None:
    """Print a dictionary's metadata and evaluation metrics."""
    from autointerp.dictionaries.evaluate import evaluate, load_store_model, loss_recovered
    from autointerp.dictionaries.sources import load_dictionary
    from autointerp.errors import BadInputError
    from autointerp.harvest.store import ActivationStore

    dictionary = load_dictionary(path)
    fresh = None
    if loss and acts is None:
        raise BadInputError("--loss-recovered needs --acts (the store names the model and hook)")
    if acts is not None:
        store = ActivationStore(acts)
        fresh = evaluate(dictionary, store).as_dict()
        if loss:
            loaded = load_store_model(store, device)
            fresh.update(loss_recovered(dictionary, store, loaded).as_dict())
    print_dictionary(dictionary, path, fresh)
