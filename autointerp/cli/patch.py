"""`autointerp patch`: which dictionary features carry a task (IOI), found by patching them
from counterfactual prompts (Cunningham et al. 2023, Figure 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autointerp.cli import app
from autointerp.cli.options import DEFAULT_DB, DbOpt, DeviceOpt, Metric, SeedOpt


@app.command()
def patch(
    dicts: Annotated[list[str], typer.Option(
        "--dict", help="Dictionary folder, repeatable, all at one hook point; rotation:FOLDER reads a "
        "split baseline (pca, ica, neurons, random) as a full signed rotation.")],
    task: Annotated[str, typer.Option("--task", help="ioi (built-in generator) or a JSONL file of "
                                      "{clean, counterfactual[, answer, distractor]} pairs.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for curves.csv, curves.png, costs.json, pairs.jsonl.")],
    n_prompts: Annotated[int, typer.Option("--n-prompts", help="Prompts (IOI generates this many; a file is cut to it).")] = 50,
    counterfactual: Annotated[str, typer.Option(
        "--counterfactual", help="IOI counterfactual: abb-cbb (the paper's: a third name as indirect "
        "object) or abc (the subject's second mention replaced).")] = "abb-cbb",
    metric: Annotated[Metric, typer.Option("--metric", help="kl (to the counterfactual, the paper's) or logit-diff.")] = Metric.kl,
    select: Annotated[str, typer.Option(
        "--select", help="Comma-separated selection methods: greedy (the paper's elimination), grad "
        "(attribution patching), ig (integrated gradients).")] = "greedy,grad,ig",
    n_thresholds: Annotated[int, typer.Option("--n-thresholds", help="Greedy thresholds, logspace(-5, 0, N).")] = 50,
    ig_steps: Annotated[int, typer.Option("--ig-steps", help="Integrated-gradient steps.")] = 10,
    model: Annotated[str | None, typer.Option("--model", help="Subject model (default: the one the dictionaries name).")] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Sequences per forward pass (bounds memory).")] = 64,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Patch dictionary features from counterfactual prompts; curves of KL against features and edit size."""
    from autointerp.causal.bar import pass_progress
    from autointerp.causal.run import PatchConfig, run_patch

    cfg = PatchConfig(tuple(dicts), task, str(out), n_prompts, counterfactual, metric.value,
                      tuple(s.strip() for s in select.split(",") if s.strip()), n_thresholds,
                      ig_steps, seed, model, device, max_batch)
    with pass_progress() as progress:
        result = run_patch(cfg, db, progress, typer.echo)
    if result["warning"]:
        typer.secho(result["warning"], fg=typer.colors.RED, err=True)
    for c in result["costs"]:
        typer.echo(f"{c['dictionary']:>24} {c['method']:>6}: {c['forward_passes']} forward passes, {c['seconds']} s")
    typer.echo(f"wrote {out / 'curves.csv'} and {out / 'curves.png'}")
