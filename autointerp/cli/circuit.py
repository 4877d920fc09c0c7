"""`autointerp circuit`: trace a feature's causes through earlier layers' dictionaries
(Cunningham et al. 2023, Figure 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autointerp.cli import app
from autointerp.cli.options import DEFAULT_DB, DbOpt, DeviceOpt


@app.command()
def circuit(
    dicts: Annotated[list[str], typer.Option(
        "--dict", help="Dictionary folder at an earlier layer, repeatable (one per layer).")],
    target: Annotated[str, typer.Option("--target", help="FOLDER:FEATURE, the feature whose causes to trace.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for circuit.json and circuit.svg.")],
    acts: Annotated[str | None, typer.Option(
        "--acts", help="Activation store for the target's top examples (default: the target dictionary's).")] = None,
    mode: Annotated[str, typer.Option(
        "--mode", help="exact (one ablation per upstream feature) or attribution (one backward pass "
        "per node; kept edges are then measured exactly).")] = "exact",
    top_k: Annotated[int, typer.Option("--top-k", help="Causes kept per node (the paper's 3).")] = 3,
    threshold: Annotated[float, typer.Option("--threshold", help="Drop under which an edge is pruned (the paper's 1%).")] = 0.01,
    n_examples: Annotated[int, typer.Option("--n-examples", help="Top activating examples of the target (the paper's 20).")] = 20,
    context: Annotated[int, typer.Option("--context", help="Tokens of context before each example's top token.")] = 32,
    model: Annotated[str | None, typer.Option("--model", help="Subject model (default: the one the dictionaries name).")] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Sequences per forward pass (bounds memory).")] = 64,
    device: DeviceOpt = "auto",
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Trace a target feature's causes: each node keeps its top-k upstream features by ablation drop."""
    from autointerp.causal.bar import pass_progress
    from autointerp.causal.circuit_run import CircuitConfig, run_circuit

    cfg = CircuitConfig(tuple(dicts), target, str(out), acts, mode, top_k, threshold, n_examples,
                        context, model, device, max_batch)
    with pass_progress() as progress:
        result = run_circuit(cfg, db, progress)
    for e in result["edges"]:
        s, t = result["nodes"][e["source"]], result["nodes"][e["target"]]
        typer.echo(f"{s['hook']} #{s['feature']} -> {t['hook']} #{t['feature']}: drop "
                   f"{e['exact_drop']:.1%}, cos {e['cosine']:.2f}")
    typer.echo(f"{len(result['nodes'])} nodes, {len(result['edges'])} edges, "
               f"{result['forward_passes']} forward passes; wrote {out / 'circuit.json'} and {out / 'circuit.svg'}")
