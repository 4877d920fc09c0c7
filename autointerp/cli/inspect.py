"""`autointerp inspect`: a dictionary's metadata and evaluation metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from autointerp.cli import app

SHOWN = ("method", "model", "layer", "input_transform", "store", "store_model_hash", "input_scale")


def hook_row(meta: dict) -> str | None:
    """The hook point in our vocabulary, with the name the dictionary's files use beside it."""
    from autointerp.dictionaries.dictionary import declared_hook
    from autointerp.errors import BadInputError

    raw = meta.get("hook_source_name") or meta.get("hook")
    try:
        ours = declared_hook(meta)
    except BadInputError:
        return f"{raw} (no equivalent among ours: cannot be harvested)"
    if ours is None:
        return None
    return ours if raw in (None, ours) else f"{ours} (as written: {raw})"


def hook_reading(meta: dict) -> str | None:
    """Where and how the hook point is read: the module, pre or post norm, reshape, transform."""
    from autointerp.dictionaries.dictionary import declared_hook
    from autointerp.errors import BadInputError
    from autointerp.harvest.hook_names import describe_hook

    try:
        ours = declared_hook(meta)
    except BadInputError:
        return None
    return describe_hook(ours, meta.get("input_transform")) if ours else None


def identity_rows(dictionary, path: Path) -> list[tuple[str, str]]:
    """Architecture, source and how the input is prepared, for every kind of folder (our own
    dictionaries record no architecture or source: their method and folder are both)."""
    meta = dictionary.meta
    rows = [("architecture", meta.get("architecture") or meta.get("method") or dictionary.activation),
            ("source", meta.get("source") or f"autointerp folder {path}")]
    if dictionary.input_norm != "none":
        rows.append(("input normalisation", dictionary.input_norm))
    if not dictionary.apply_b_dec_to_input:
        rows.append(("b_dec subtracted from input", "no"))
    if dictionary.encode_only:
        rows.append(("encode only", "yes: its decoder predicts another hook point, so "
                                    "FVU and loss recovered are n/a"))
    return rows


def print_dictionary(dictionary, path: Path, fresh: dict | None = None) -> None:
    """One table: identity, shape, provenance, hyperparameters and metrics."""
    from autointerp.dictionaries.sources import dictionary_id

    table = Table(title=str(path), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    meta = dictionary.meta
    table.add_row("id", dictionary_id(path))
    table.add_row("features x d_model", f"{dictionary.n_features} x {dictionary.d_model}")
    table.add_row("activation", dictionary.activation + (f" (k={dictionary.k})" if dictionary.k else ""))
    hook = hook_row(meta)
    table.add_row("hook", hook or "none declared (score asks for --hook)")
    if how := hook_reading(meta):
        table.add_row("read as", how)
    for name, value in identity_rows(dictionary, path):
        table.add_row(name, value)
    for key in SHOWN:
        if meta.get(key) is not None:
            table.add_row(key, str(meta[key]))
    table.add_row("hyperparameters", json.dumps(meta.get("hyperparameters", {}), sort_keys=True))
    for title, metrics in (("saved", meta.get("metrics")), ("measured", fresh)):
        for name, value in (metrics or {}).items():
            table.add_row(f"{name} ({title})", f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


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
