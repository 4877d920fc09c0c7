"""`autointerp demo` (what `make demo` runs): the whole experiment on the offline default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from autointerp.cli import app
from autointerp.cli.display import print_verdicts
from autointerp.cli.options import (
    DeviceOpt,
    OldModeOpt,
    ScoringMode,
    SeedOpt,
    deprecated,
    value,
)
from autointerp.demo import DemoConfig as D  # one set of defaults: the library's

Opt = typer.Option


@app.command()
def demo(
    out: Annotated[Path, Opt("--out", help="Folder for table, plot, report and the database; "
                             "stores and dictionaries go under OUT/demo/.")] = D.out,
    db: Annotated[Path | None, Opt("--db", help="Database (default: OUT/autointerp.db).")] = None,
    model: Annotated[str, Opt("--model", help="Subject model: smollm2-135m (offline), an HF "
                              "name or a local folder.")] = D.model,
    layer: Annotated[int, Opt("--layer", help="Decoder block to harvest (from 0).")] = D.layer,
    hook: Annotated[str, Opt("--hook", help="resid (block output), mlp or attn.")] = D.hook,
    tokens: Annotated[int, Opt("--tokens", help="Tokens harvested per model (20% held out "
                               "for scoring fragments).")] = D.n_tokens,
    n_sampled: Annotated[int, Opt("--n-sampled", help="Features sampled and scored per "
                                  "dictionary (the paper: 150).")] = D.n_features,
    ratio: Annotated[int, Opt("--ratio", help="SAE width as a multiple of d_model.")] = D.sae_ratio,
    k: Annotated[int, Opt("--k", help="Active latents per token of the TopK SAE.")] = D.sae_k,
    train_tokens: Annotated[int, Opt("--train-tokens", help="Activations the SAE trains on "
                                     "(epochs over the harvested ones).")] = D.train_tokens,
    n_fit: Annotated[int, Opt("--n-fit", help="Activations the baselines are fit on (FastICA's "
                              "time grows with it).")] = D.n_fit,
    llm: Annotated[str, Opt("--llm", help="In-process explainer and simulator model; none: "
                            "lexical rows only, no LLM.")] = D.llm,
    scoring_mode: Annotated[ScoringMode, Opt("--scoring-mode", help="How the scoring model is "
                                             "read: auto probes it.")] = D.simulator_mode,
    random_model: Annotated[bool, Opt("--random-model/--no-random-model", help="Also score an "
                                      "SAE trained on the re-initialised model (control).")] = D.random_model,
    lexical: Annotated[bool, Opt("--lexical/--no-lexical", help="Also score every dictionary "
                                 "with the lexical explainer and simulator (reference).")] = D.lexical,
    concurrency: Annotated[int, Opt("--concurrency", help="Features in flight at once.")] = D.concurrency,
    detection_examples: Annotated[int, Opt("--detection-examples", help="Held-out activating "
                                           "examples per feature for detection, and as many "
                                           "checked negatives.")] = D.detection_examples,
    device: DeviceOpt = D.device,
    seed: SeedOpt = D.seed,
    output_score: Annotated[bool, Opt("--output-score/--no-output-score", help="Also score "
                                      "each dictionary's features by steering them (judge-free "
                                      "output score).")] = D.output_score,
    steer_prompts: Annotated[int, Opt("--steer-prompts", help="Held-out prompts steered per "
                                      "feature for the output score.")] = D.steer_prompts,
    intervention: Annotated[bool, Opt("--intervention/--no-intervention", help="Also the "
                                      "intervention score of every explanation (the subject "
                                      "model reads it on steered text; slower).")] = D.intervention,
    n_features: Annotated[int | None, Opt("--n-features", hidden=True, help="Deprecated: --n-sampled.")] = None,
    simulator_mode: OldModeOpt = None,
) -> None:
    """Run the whole experiment: harvest, SAE and baselines, self-test, score, compare, report."""
    from autointerp.demo import run_demo

    n_sampled = deprecated("--n-features", "--n-sampled", n_features, n_sampled, D.n_features)
    mode = value(deprecated("--simulator-mode", "--scoring-mode", simulator_mode, scoring_mode,
                            D.simulator_mode))

    cfg = D(out=out, db=db, model=model, layer=layer, hook=hook, n_tokens=tokens, n_features=n_sampled,
            sae_ratio=ratio, sae_k=k, train_tokens=train_tokens, n_fit=n_fit,
            llm=None if llm.lower() == "none" else llm,
            simulator_mode=mode, random_model=random_model, lexical=lexical,
            concurrency=concurrency, device=device, seed=seed,
            detection_examples=detection_examples, output_score=output_score,
            steer_prompts=steer_prompts, intervention=intervention)
    console = Console()
    result = run_demo(cfg, console)
    console.rule("outputs")
    for name, path in result.paths.items():
        console.print(f"{name}: {path}", markup=False, highlight=False)
    console.print(f"wall time: {result.seconds['total'] / 60:.1f} min", markup=False)
    print_verdicts(console, result.verdicts)
