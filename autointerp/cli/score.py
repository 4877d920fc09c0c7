"""`autointerp score`: explain-then-simulate scores for one or more dictionaries."""

from __future__ import annotations

import asyncio
import math
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from autointerp.cli import app
from autointerp.cli.options import (
    DEFAULT_DB,
    EXPLAINER,
    INPUTS,
    RUN,
    SCORERS_PANEL,
    ApiKeyEnvOpt,
    Backend,
    BaseUrlOpt,
    ConcurrencyOpt,
    DbOpt,
    DeviceOpt,
    ExampleTokensOpt,
    ModelDtype,
    OldBackendOpt,
    OldModelOpt,
    OldModeOpt,
    OldUrlOpt,
    PerPromptOpt,
    QuantilesOpt,
    RandomFrom,
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
    value,
)
from autointerp.cli.steer_options import (
    ContinuationOpt,
    ExplainOutputsOpt,
    InterventionBy,
    InterventionByOpt,
    SteerKlOpt,
    SteerPromptsOpt,
    SteerTokensOpt,
    steer_settings,
)
from autointerp.errors import BadInputError
from autointerp.progress import Progress, RichProgress

DictOpt = Annotated[list[Path], typer.Option("--dict", help="Dictionary to score (repeatable): a folder (ours, sae-lens, sparsify, Gemma Scope; a sparsify checkpoint root scores every hookpoint), hf:ORG/REPO or hf:ORG/REPO/PATH (Hugging Face Hub), or saelens:RELEASE/SAE_ID.", rich_help_panel=INPUTS)]
ActsOpt = Annotated[Path | None, typer.Option("--acts", help="Activation store with the eval fragments; default: the store named in each dictionary's metadata.", rich_help_panel=INPUTS)]
HarvestModelOpt = Annotated[str | None, typer.Option("--model", help="Harvest activations of this model first (no --acts): HF name or path.", rich_help_panel=INPUTS)]
LayerOpt = Annotated[int | None, typer.Option("--layer", help="Layer to harvest (with --model); default: each dictionary's own hook point.", rich_help_panel=INPUTS)]
HookOpt = Annotated[str | None, typer.Option("--hook", help="Hook point to harvest (with --model): resid, resid_mid, mlp, attn with --layer, or a full name (embed, resid.6, blocks.6.hook_resid_pre, layers.6); default: each dictionary's own.", rich_help_panel=INPUTS)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Score even when the store's model, hook point or input transform differs from the dictionary's (recorded with the run).", rich_help_panel=INPUTS)]
CorpusOpt = Annotated[str | None, typer.Option("--corpus", help="Corpus to harvest (with --model): builtin or a path.", rich_help_panel=INPUTS)]
TokensOpt = Annotated[int, typer.Option("--tokens", help="Tokens to harvest (with --model).", rich_help_panel=INPUTS)]
NSampledOpt = Annotated[int, typer.Option("--n-sampled", help="Features sampled per dictionary (among those non-zero in >= 20 fragments).", rich_help_panel=RUN)]
OldNFeaturesOpt = Annotated[int | None, typer.Option("--n-features", hidden=True, help="Deprecated: --n-sampled.")]
RandomFromOpt = Annotated[RandomFrom, typer.Option("--random-from", help="Random fragments drawn among fragments where the feature is non-zero, or among all.", rich_help_panel=SCORERS_PANEL)]
ExplainerOpt = Annotated[Backend, typer.Option("--explainer", help="Explainer backend.", rich_help_panel=EXPLAINER)]
ExplainerModelOpt = Annotated[str | None, typer.Option("--explainer-model", help="Explainer model (default: smollm2-135m in process; required for openai).", rich_help_panel=EXPLAINER)]
ExplainerUrlOpt = Annotated[str | None, typer.Option("--explainer-base-url", help="Explainer endpoint, overriding --base-url.", rich_help_panel=EXPLAINER)]
NExplOpt = Annotated[int, typer.Option("--explanations-per-feature", help="Explanations sampled per feature at temperature > 0; the score is their mean.", rich_help_panel=EXPLAINER)]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Processes that score features at once, each with its share of --concurrency (endpoint or lexical backends). Reading each answer is Python work, so one process is bound to one core; use up to the cores free beside the endpoint.", rich_help_panel=RUN)]
HarvestDtypeOpt = Annotated[ModelDtype, typer.Option("--dtype", help="Model dtype for the harvest (with --model), as harvest's --dtype: auto (bf16 on CUDA and on CPUs with native bf16, else fp32). bf16 moves features against an fp32 reference.", rich_help_panel=INPUTS)]
SelftestOpt = Annotated[bool, typer.Option("--selftest/--no-selftest", help="Run the scoring model's self-test on planted features first (cached).", rich_help_panel=SCORERS_PANEL)]
ExplanationsOpt = Annotated[Path | None, typer.Option("--explanations", help="Score explanations written elsewhere instead of explaining: our `export neuronpedia` folder, Neuronpedia's public export (explanations/batch-N.jsonl.gz), delphi's explanations folder, or a CSV/JSONL of index,text[,source]. Sampled features it does not explain are listed, not scored.", rich_help_panel=EXPLAINER)]
ExplanationsSourceOpt = Annotated[str | None, typer.Option("--explanations-source", help="With --explanations: keep only rows of this source (Neuronpedia: TYPENAME/EXPLANATIONMODELNAME, e.g. oai_token-act-pair/gpt-4o-mini), for files that explain a feature more than once.", rich_help_panel=EXPLAINER)]
ResampleOpt = Annotated[int, typer.Option("--resample-examples", help="Simulation, detection and fuzzing: score each explanation on N seeded draws of its held-out examples (draw 0 is the usual one; the others resample them with replacement); the score is their mean, and compare splits off the variance between draws. 1 changes nothing.", rich_help_panel=SCORERS_PANEL)]


def _ci(s) -> str:
    if math.isnan(s.mean):
        return "-"
    return f"{s.mean:.3f} [{s.lo:.3f}, {s.hi:.3f}]" if not math.isnan(s.lo) else f"{s.mean:.3f}"


def summary_table(summaries, paths: list | None = None) -> Table:
    """One row per dictionary; failure reasons and how the simulator was run as footnotes.
    `paths` (the --dict of each summary) tell apart dictionaries that share a label."""
    spread = any(not math.isnan(s.mean_spread) for s in summaries)
    table = Table(title="Scores per dictionary", caption="\n".join(
        [f"{s.label}: {s.simulator} ({s.notes or s.simulator_mode}); failed: "
         + ("; ".join(f"{n}x {r}" for r, n in s.failures[:3]) or "none")
         + (f"; ledger ({s.scorer}): {s.ledger}" if s.ledger else "") for s in summaries]))
    for col in ("dictionary", "scored", "failed", "skipped", "score [95% CI]",
                *(("spread",) if spread else ()), "self-test", "scorer", "AUROC"):
        table.add_column(col, overflow="fold")
    for s, path in zip(summaries, paths or [None] * len(summaries), strict=True):
        verdict = {True: "pass", False: "FAIL", None: "-"}[s.selftest_passed]
        # One label for several dictionaries (a checkpoint root's hookpoints): name each folder.
        shared = len({o.dictionary for o in summaries if o.label == s.label}) > 1
        name = f"{s.label} {Path(path).name}" if shared and path is not None else s.label
        extra = (("-" if math.isnan(s.mean_spread) else f"{s.mean_spread:.3f}",) if spread else ())
        table.add_row(name, str(s.n_scored), str(s.n_failed), str(s.n_skipped), _ci(s),
                      *extra, verdict, s.scorer, "-" if math.isnan(s.auroc) else f"{s.auroc:.3f}")
    return table


def cost_table(summaries) -> Table:
    """Mean LLM calls and tokens per feature: the explanation's, then each scorer's own."""
    table = Table(title="Cost per feature (calls; prompt + completion tokens)",
                  caption="calls without reported usage are counted but add no tokens")
    for col in ("dictionary", "scorer", "explain calls", "explain tokens", "scorer calls",
                "scorer tokens", "calls without usage"):
        table.add_column(col, overflow="fold")
    for s in summaries:
        c = dict(s.cost)
        table.add_row(s.label, s.scorer, f"{c['explain_n_calls']:.1f}",
                      f"{c['explain_prompt_tokens']:.0f} + {c['explain_completion_tokens']:.0f}",
                      f"{c['n_calls']:.1f}", f"{c['prompt_tokens']:.0f} + {c['completion_tokens']:.0f}",
                      f"{c['explain_usage_unknown'] + c['usage_unknown']:.1f}")
    return table


async def _score_all(cfgs, explainer, simulator, db, clients, workers=None):
    from autointerp.scoring.pipeline import score_dictionary_runs

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[stats]}"))
    with Progress(*columns, transient=False) as bar:
        hooks = RichProgress(bar, clients)
        return [s for c in cfgs
                for s in await score_dictionary_runs(c, explainer, simulator, db, hooks,
                                                     workers)]


@app.command()
def score(dict_: DictOpt, acts: ActsOpt = None, model: HarvestModelOpt = None,
          layer: LayerOpt = None, corpus: CorpusOpt = None, tokens: TokensOpt = 200_000,
          db: DbOpt = DEFAULT_DB, n_sampled: NSampledOpt = 150,
          random_from: RandomFromOpt = RandomFrom.nonzero,
          explainer: ExplainerOpt = Backend.inprocess,
          explainer_model: ExplainerModelOpt = None, explainer_base_url: ExplainerUrlOpt = None,
          scoring_backend: ScoringBackendOpt = Backend.inprocess,
          scoring_model_: ScoringModelOpt = None, scoring_base_url: ScoringUrlOpt = None,
          scoring_mode: ScoringModeOpt = ScoringMode.auto,
          base_url: BaseUrlOpt = None, api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
          concurrency: ConcurrencyOpt = 8, explanations_per_feature: NExplOpt = 1,
          selftest: SelftestOpt = True, device: DeviceOpt = "auto", seed: SeedOpt = 0,
          hook: HookOpt = None, force: ForceOpt = False, scorer: ScorerOpt = None,
          workers: WorkersOpt = 1, examples_per_prompt: PerPromptOpt = 10,
          example_tokens: ExampleTokensOpt = 21, quantiles: QuantilesOpt = 10,
          steer_kl: SteerKlOpt = 0.5, steer_prompts: SteerPromptsOpt = 40,
          steer_prompt_tokens: SteerTokensOpt = 32, continuation_tokens: ContinuationOpt = 8,
          intervention_scorer: InterventionByOpt = InterventionBy.subject,
          explain_outputs: ExplainOutputsOpt = False,
          simulator: OldBackendOpt = None, simulator_model: OldModelOpt = None,
          simulator_base_url: OldUrlOpt = None, simulator_mode: OldModeOpt = None,
          n_features: OldNFeaturesOpt = None, explanations: ExplanationsOpt = None,
          explanations_source: ExplanationsSourceOpt = None,
          dtype: HarvestDtypeOpt = ModelDtype.auto,
          resample_examples: ResampleOpt = 1) -> None:
    """Score dictionaries: sample features, explain their top fragments (or read the
    explanations given), score each explanation with every scorer asked for."""
    from autointerp.db import open_db
    from autointerp.scoring.fragments import FragmentConfig
    from autointerp.scoring.llms import judge_settings, make_llms
    from autointerp.scoring.pipeline import ScoreConfig

    backend, sim_model, sim_url, mode = scoring_model(
        scoring_backend, scoring_model_, scoring_base_url, scoring_mode, simulator,
        simulator_model, simulator_base_url, simulator_mode)
    n_sampled = deprecated("--n-features", "--n-sampled", n_features, n_sampled, 150)
    explainer = value(explainer)
    if n_sampled < 1:
        raise BadInputError(f"--n-sampled must be at least 1 (got {n_sampled})")
    if workers < 1 or (workers > 1 and "inprocess" in (explainer, backend)):
        raise BadInputError(f"--workers must be at least 1, and 1 with an in-process model "
                            f"(each worker would load its own; got {workers})")
    judge = judge_settings(examples_per_prompt, example_tokens, quantiles)
    scorers = scorer_names(scorer)
    from autointerp.scoring.scorers.draws import check_draws

    check_draws(resample_examples, scorers)
    from autointerp.dictionaries.sources import expand_specs

    dict_ = expand_specs(dict_)  # a sparsify checkpoint root scores every hookpoint
    given = None
    if explanations is not None:  # read and checked before a harvest or the database
        from autointerp.scoring.given import given_explainer

        given = given_explainer(explanations, dict_, explanations_source,
                                explanations_per_feature, workers)
        explainer = "lexical"  # no explainer model is loaded
    if explain_outputs and (explainer == "lexical" or workers > 1):
        raise BadInputError("--explain-outputs needs an LLM explainer (not --explanations or "
                            "the lexical one) and --workers 1: it steers the model in process")
    stores = {d: acts for d in dict_}
    if acts is None and model is not None:
        from autointerp.scoring.stores import HarvestSpec, harvest_for

        stores = harvest_for(dict_, HarvestSpec(model, hook, layer, corpus, tokens, seed, device,
                                                force, value(dtype)))
    check_stores(stores, force)  # before any LLM is loaded
    database = open_db(db)
    llm_args = dict(explainer=explainer, explainer_model=explainer_model,
                    explainer_url=explainer_base_url or base_url, simulator=backend,
                    simulator_model=sim_model, simulator_mode=mode,
                    simulator_url=sim_url or base_url, api_key_env=api_key_env,
                    device=device, n_explanations=explanations_per_feature)
    expl, sim, clients = make_llms(database, concurrency=concurrency, **llm_args)
    expl = given or expl
    frag_cfg = FragmentConfig(n_features=n_sampled, random_from=value(random_from), seed=seed)
    steering = steer_settings(steer_kl, steer_prompts, steer_prompt_tokens, continuation_tokens,
                              seed, value(intervention_scorer))
    cfgs = [ScoreConfig(d, stores[d], frag_cfg, explanations_per_feature, concurrency, selftest,
                        force=force, scorers=scorers, judge=judge, steering=steering,
                        resample_examples=resample_examples)
            for d in dict_]
    from autointerp.scoring.workers import Workers, concurrency_share, fewer_collections

    fewer_collections()
    share = concurrency_share(concurrency, workers)
    with Workers(workers, str(db), partial(make_llms, concurrency=share, **llm_args)) as pool:
        from autointerp.scoring.pipeline import score_features

        pool.start(score_features)
        summaries = asyncio.run(_score_all(cfgs, expl, sim, database, clients, pool))
    if explain_outputs:  # the same features, explained again with their output effects
        from autointerp.scoring.explain_outputs import OutputCentricExplainer

        summaries += asyncio.run(_score_all(cfgs, OutputCentricExplainer(expl, steering), sim,
                                            database, clients))
    console = Console()
    from autointerp.dictionaries.sources import dictionary_id

    paths = {dictionary_id(c.dictionary): c.dictionary for c in cfgs}
    console.print(summary_table(summaries, [paths.get(s.dictionary) for s in summaries]))
    console.print(cost_table(summaries))
    for s in summaries[:1]:
        if s.unexplained:
            console.print(f"{len(s.unexplained)} sampled features have no explanation in "
                          f"{explanations}, not scored: {', '.join(map(str, s.unexplained))}",
                          markup=False)
    if any(s.selftest_passed is False for s in summaries):
        failed = sorted({s.scorer for s in summaries if s.selftest_passed is False})
        console.print(f"WARNING: the model failed its self-test on planted features for "
                      f"{', '.join(failed)}, so those scores are not meaningful (see `autointerp "
                      "selftest`).", style="bold red", markup=False)


def check_stores(stores: dict, force: bool) -> None:
    """Refuse (one line) a dictionary whose store holds another model, hook point or input
    transform than it declares, before anything slow starts; --force lets it through."""
    from autointerp.dictionaries.header import check_compatible
    from autointerp.dictionaries.sources import read_header
    from autointerp.harvest.store import ActivationStore
    from autointerp.scoring.pipeline import ScoreConfig, resolve_store

    for path, acts in stores.items():
        dictionary = read_header(path)
        store = ActivationStore(resolve_store(ScoreConfig(path, acts), dictionary.meta))
        for mismatch in check_compatible(dictionary, store, force):
            Console(stderr=True).print(f"warning (--force): {mismatch}", style="yellow",
                                       markup=False)
