"""`autointerp selftest`: can this simulator tell a right explanation from a wrong one?"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from autointerp.cli import app
from autointerp.cli.options import (
    DEFAULT_DB,
    ApiKeyEnvOpt,
    Backend,
    BaseUrlOpt,
    ConcurrencyOpt,
    DbOpt,
    DeviceOpt,
    ExampleTokensOpt,
    OldBackendOpt,
    OldModelOpt,
    OldModeOpt,
    OldUrlOpt,
    PerPromptOpt,
    QuantilesOpt,
    ScorerOpt,
    ScoringBackendOpt,
    ScoringMode,
    ScoringModelOpt,
    ScoringModeOpt,
    ScoringUrlOpt,
    SeedOpt,
    deprecated,
    scorer_names,
    scoring_model,
)
from autointerp.cli.steer_options import (
    ContinuationOpt,
    SteerKlOpt,
    SteerPromptsOpt,
    SteerTokensOpt,
    steer_settings,
)
from autointerp.progress import Progress

StoreOpt = Annotated[Path | None, typer.Option("--acts", help="Activation store whose eval fragments carry the planted features; default: the builtin corpus, tokenized with SmolLM2's tokenizer.")]
PlantedOpt = Annotated[int, typer.Option("--n-planted", min=2, max=12, help="Planted features to score, each with its true and with a wrong explanation.")]
OldPlantedOpt = Annotated[int | None, typer.Option("--n-features", hidden=True, min=2, max=12, help="Deprecated: --n-planted.")]
RightOpt = Annotated[float, typer.Option("--right-threshold", help="The simulator fails below this mean score with the true explanations (simulation; detection and fuzzing need balanced accuracy 0.75).")]
GapOpt = Annotated[float, typer.Option("--gap-threshold", help="The simulator fails below this mean gap between true and wrong explanations (simulation; detection and fuzzing need 0.2).")]

WARNING = ("WARNING: scores from this simulator are not meaningful: it failed the self-test "
           "on planted features ({why}). Use a stronger simulator (Cunningham et al. simulated "
           "with a GPT-3.5-class model).")


def _ci(mean: float, lo: float, hi: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if math.isnan(lo) else f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def _score(x: float | None) -> str:
    return "failed" if x is None else f"{x:.3f}"


def details_table(res) -> Table:
    kind = "Simulator" if res.scorer == "simulation" else f"{res.scorer.capitalize()}"
    table = Table(title=f"{kind} self-test: {res.simulator} ({res.mode})")
    for col in ("planted feature", "true explanation", "score", "wrong explanation", "score",
                "failure"):
        table.add_column(col, overflow="fold")
    for d in res.details:
        table.add_row(d.feature, d.explanation, _score(d.right), d.wrong_explanation,
                      _score(d.wrong), d.failure or "")
    return table


@app.command()
def selftest(acts: StoreOpt = None, db: DbOpt = DEFAULT_DB, n_planted: PlantedOpt = 8,
             right_threshold: RightOpt = 0.5, gap_threshold: GapOpt = 0.2,
             scoring_backend: ScoringBackendOpt = Backend.inprocess,
             scoring_model_: ScoringModelOpt = None, scoring_base_url: ScoringUrlOpt = None,
             scoring_mode: ScoringModeOpt = ScoringMode.auto,
             base_url: BaseUrlOpt = None, api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
             concurrency: ConcurrencyOpt = 8, device: DeviceOpt = "auto",
             seed: SeedOpt = 0, scorer: ScorerOpt = None,
             examples_per_prompt: PerPromptOpt = 10, example_tokens: ExampleTokensOpt = 21,
             quantiles: QuantilesOpt = 10, steer_kl: SteerKlOpt = 0.5,
             steer_prompts: SteerPromptsOpt = 40, steer_prompt_tokens: SteerTokensOpt = 32,
             continuation_tokens: ContinuationOpt = 8, simulator: OldBackendOpt = None,
             simulator_model: OldModelOpt = None, simulator_base_url: OldUrlOpt = None,
             simulator_mode: OldModeOpt = None, n_features: OldPlantedOpt = None) -> None:
    """Score planted features with their true and with wrong explanations, for each scorer
    asked for (default simulation); PASS or FAIL per scorer."""
    from autointerp.db import open_db
    from autointerp.harvest.store import ActivationStore
    from autointerp.scoring.llms import judge_settings, make_simulator
    from autointerp.scoring.scorers import make_scorers

    backend, model, url, mode = scoring_model(
        scoring_backend, scoring_model_, scoring_base_url, scoring_mode, simulator,
        simulator_model, simulator_base_url, simulator_mode)
    n_planted = deprecated("--n-features", "--n-planted", n_features, n_planted, 8)
    names = scorer_names(scorer)
    judge = judge_settings(examples_per_prompt, example_tokens, quantiles)
    store = ActivationStore(acts) if acts is not None else None
    database = open_db(db)
    sim = make_simulator(database, backend, model, mode, url or base_url, api_key_env,
                         concurrency, device, {})
    steer = steer_settings(steer_kl, steer_prompts, steer_prompt_tokens, continuation_tokens, seed)
    for one in make_scorers(names, sim, judge, steer):
        _one_selftest(one, sim, database, store, n_planted, seed, right_threshold,
                      gap_threshold)


def _one_selftest(scorer, sim, database, store, n_features, seed, right_threshold,
                  gap_threshold) -> None:
    from autointerp.scoring.selftest import run_selftest

    if hasattr(scorer, "bind"):
        return _output_selftest(scorer, database, store)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns) as bar:
        task = bar.add_task(f"{scorer.name} of planted features", total=None)
        res = run_selftest(sim, database, store=store, n_features=n_features, seed=seed,
                           right_threshold=right_threshold, gap_threshold=gap_threshold,
                           scorer=scorer, on_total=lambda n: bar.update(task, total=n),
                           tick=lambda: bar.advance(task))
    console = Console()
    console.print(details_table(res))
    console.print(f"right explanation {_ci(*res.right)}   wrong explanation {_ci(*res.wrong)}   "
                  f"gap {_ci(*res.gap)}   (thresholds: right >= {res.right_threshold}, gap >= "
                  f"{res.gap_threshold}; {res.n_failed} failed simulations"
                  f"{'; cached' if res.cached else ''})", markup=False)
    style = "bold green" if res.passed else "bold red"
    what = "" if res.scorer == "simulation" else f" [{res.scorer}]"
    console.print(f"{res.verdict}: {res.simulator} ({res.mode}){what}", style=style, markup=False)
    if not res.passed:
        console.print(WARNING.format(why="; ".join(res.shortfalls())), style="bold red",
                      markup=False)
    from autointerp.scoring.perturbation import checked

    # Does the score drop for a partial or padded explanation? (scoring/perturbation.py)
    p = asyncio.run(checked(scorer, sim, database, store=store, seed=seed))
    console.print(p.line(), style="bold red" if p.flagged else None, markup=False)


def _output_selftest(scorer, database, store) -> None:
    """Planted output features (steering scorers): no simulator involved."""
    from autointerp.scoring.selftest_outputs import run_output_selftest

    res = run_output_selftest(scorer, database, store=store)
    table = Table(title=f"{scorer.name} self-test: planted output features on {res.simulator}")
    for col in ("planted", "explanation", "score", "compared with", "its score", "note"):
        table.add_column(col, overflow="fold")
    for d in res.details:
        table.add_row(d.feature, d.explanation, _score(d.right), d.wrong_explanation,
                      _score(d.wrong), d.failure or "")
    console = Console()
    console.print(table)
    console.print(f"planted {_ci(*res.right)}   null {_ci(*res.wrong)}   difference "
                  f"{_ci(*res.gap)}{'   (cached)' if res.cached else ''}", markup=False)
    console.print(f"{res.verdict}: {res.simulator} [{scorer.name}]",
                  style="bold green" if res.passed else "bold red", markup=False)
