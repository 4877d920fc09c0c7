"""What several commands print the same way (not a command module: commands import it,
never each other)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def print_verdicts(console: Console, verdicts: list[str]) -> None:
    """The self-test verdicts, a failure in bold red so nobody reads past it."""
    for line in verdicts:
        style = "bold red" if line.startswith("WARNING") else "green" if \
            line.startswith("Self-test passed") else "yellow"
        console.print(line, style=style, markup=False, highlight=False)


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
