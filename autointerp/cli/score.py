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
from autointerp.cli.options import DEFAULT_DB, DbOpt, DeviceOpt, SeedOpt
from autointerp.cli.steer_options import (
    ContinuationOpt,
    InterventionByOpt,
    SteerKlOpt,
    SteerPromptsOpt,
    SteerTokensOpt,
    steer_settings,
)
from autointerp.errors import BadInputError
from autointerp.progress import Progress, RichProgress

BACKENDS = ("inprocess", "openai", "lexical")
DEFAULT_INPROCESS_MODEL = "smollm2-135m"

DictOpt = Annotated[list[Path], typer.Option("--dict", help="Dictionary to score (repeatable): a folder (ours, sae-lens, sparsify, Gemma Scope; a sparsify checkpoint root scores every hookpoint), hf:ORG/REPO or hf:ORG/REPO/PATH (Hugging Face Hub), or saelens:RELEASE/SAE_ID.")]
ActsOpt = Annotated[Path | None, typer.Option("--acts", help="Activation store with the eval fragments; default: the store named in each dictionary's metadata.")]
HarvestModelOpt = Annotated[str | None, typer.Option("--model", help="Harvest activations of this model first (no --acts): HF name or path.")]
LayerOpt = Annotated[int | None, typer.Option("--layer", help="Layer to harvest (with --model); default: each dictionary's own hook point.")]
HookOpt = Annotated[str | None, typer.Option("--hook", help="Hook point to harvest (with --model): resid, resid_mid, mlp, attn with --layer, or a full name (embed, resid.6, blocks.6.hook_resid_pre, layers.6); default: each dictionary's own.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Score even when the store's model, hook point or input transform differs from the dictionary's (recorded with the run).")]
CorpusOpt = Annotated[str | None, typer.Option("--corpus", help="Corpus to harvest (with --model): builtin or a path.")]
TokensOpt = Annotated[int, typer.Option("--tokens", help="Tokens to harvest (with --model).")]
NFeaturesOpt = Annotated[int, typer.Option("--n-features", help="Features sampled per dictionary (among those non-zero in >= 20 fragments).")]
RandomFromOpt = Annotated[str, typer.Option("--random-from", help="Random fragments drawn among fragments where the feature is non-zero (nonzero) or among all (all).")]
ExplainerOpt = Annotated[str, typer.Option("--explainer", help="Explainer backend: inprocess, openai or lexical.")]
ExplainerModelOpt = Annotated[str | None, typer.Option("--explainer-model", help="Explainer model (default: smollm2-135m in process; required for openai).")]
ExplainerUrlOpt = Annotated[str | None, typer.Option("--explainer-base-url", help="Explainer endpoint, overriding --base-url.")]
SimulatorOpt = Annotated[str, typer.Option("--simulator", "--scoring-backend", help="Backend of the scoring model (the simulator, and the judge of detection and fuzzing): inprocess, openai or lexical.")]
SimulatorModelOpt = Annotated[str | None, typer.Option("--simulator-model", "--scoring-model", help="Scoring model for every scorer (default: smollm2-135m in process; required for openai).")]
SimulatorUrlOpt = Annotated[str | None, typer.Option("--simulator-base-url", "--scoring-base-url", help="Scoring model's endpoint, overriding --base-url.")]
SimulatorModeOpt = Annotated[str, typer.Option("--simulator-mode", "--scoring-mode", help="How the scoring model is read: auto (probe the endpoint), all-at-once, logprobs or json.")]
BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, Ollama), e.g. http://127.0.0.1:8080/v1.")]
ApiKeyEnvOpt = Annotated[str, typer.Option("--api-key-env", help="Environment variable holding the API key (read at call time, never stored).")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", help="Features (and endpoint requests) in flight at once.")]
NExplOpt = Annotated[int, typer.Option("--explanations-per-feature", help="Explanations sampled per feature at temperature > 0; the score is their mean.")]
ScorerOpt = Annotated[list[str] | None, typer.Option("--scorer", help="Scorer of the explanations (repeatable): simulation, detection, fuzzing, or all; and output or intervention (steering the feature, with the subject model), by name only. Every scorer scores the same explanation, with the simulator's model. Default: simulation.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Processes that score features at once, each with its share of --concurrency (endpoint or lexical backends). Reading each answer is Python work, so one process is bound to one core; use up to the cores free beside the endpoint.")]
PerPromptOpt = Annotated[int, typer.Option("--examples-per-prompt", help="Detection and fuzzing: held-out examples judged in one prompt (1-50).")]
ExampleTokensOpt = Annotated[int, typer.Option("--example-tokens", help="Detection and fuzzing: tokens per example, a window of its fragment (at most the store's fragment length, 64) around the maximum (SAEBench shows 21, delphi 32).")]
QuantilesOpt = Annotated[int, typer.Option("--quantiles", help="Detection and fuzzing: activation quantile bins of the activating examples; recall is reported per bin.")]
SelftestOpt = Annotated[bool, typer.Option("--selftest/--no-selftest", help="Run the simulator self-test on planted features first (cached).")]


def judge_settings(examples_per_prompt: int, example_tokens: int, quantiles: int):
    """Detection and fuzzing settings from the command's options (score, selftest)."""
    from autointerp.scoring.verdicts import JudgeSettings

    try:
        return JudgeSettings(n_quantiles=quantiles, batch_size=examples_per_prompt,
                             example_len=example_tokens)
    except ValueError:
        raise BadInputError(f"need --examples-per-prompt 1-50 (got {examples_per_prompt}), "
                            f"--example-tokens at least 2 (got {example_tokens}) and "
                            f"--quantiles at least 1 (got {quantiles})") from None


def make_backend(db, backend: str, model: str | None, base_url: str | None, api_key_env: str,
                 concurrency: int, device: str, role: str, cache: dict):
    """A cached LLM client, shared between explainer and simulator when they are the same."""
    if backend not in BACKENDS:
        raise BadInputError(f"unknown {role} backend {backend!r}; choose {', '.join(BACKENDS)}")
    if backend == "openai" and not model:
        raise BadInputError(f"--{role} openai needs --{role}-model (the endpoint's model id)")
    from autointerp.llm.cache import CachedClient
    from autointerp.llm.factory import ClientSpec, make_client

    spec = ClientSpec(backend=backend, model=model or DEFAULT_INPROCESS_MODEL,
                      base_url=base_url if backend == "openai" else None,
                      api_key_env=api_key_env, concurrency=concurrency, device=device)
    if spec not in cache:
        cache[spec] = CachedClient(make_client(spec), db)
    return cache[spec]


def make_explainer(db, backend, model, base_url, api_key_env, concurrency, device,
                   n_explanations, cache: dict):
    if backend == "lexical":
        from autointerp.scoring.scorers.lexical import LexicalExplainer
        return LexicalExplainer()
    from autointerp.scoring.explain import LLMExplainer

    client = make_backend(db, backend, model, base_url, api_key_env, concurrency, device,
                          "explainer", cache)
    # N > 1 explanations are samples (issue 7.4); one is the greedy answer.
    return LLMExplainer(client, temperature=0.0 if n_explanations == 1 else 0.7)


def make_simulator(db, backend, model, mode, base_url, api_key_env, concurrency, device,
                   cache: dict):
    """Also used by `autointerp selftest`, which takes the same simulator options."""
    from autointerp.scoring.scorers.simulation import LLMSimulator, check_mode

    check_mode(mode)
    if backend == "lexical":
        from autointerp.scoring.scorers.lexical import LexicalSimulator
        return LexicalSimulator()
    client = make_backend(db, backend, model, base_url, api_key_env, concurrency, device,
                          "simulator", cache)
    sim = LLMSimulator(client, mode)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # resolve `auto` now (cached probes), so that cache ids made from
        asyncio.run(sim.prepare())  # simulator.mode (the self-test's) name the real mode
    return sim


def make_llms(db, explainer, explainer_model, explainer_url, simulator, simulator_model,
              simulator_mode, simulator_url, api_key_env, concurrency, device,
              n_explanations) -> tuple:
    """(explainer, simulator, their clients); module-level, so that `--workers` can
    send it (with its arguments bound) to the worker processes."""
    cache: dict = {}
    sim = make_simulator(db, simulator, simulator_model, simulator_mode, simulator_url,
                         api_key_env, concurrency, device, cache)
    expl = make_explainer(db, explainer, explainer_model, explainer_url, api_key_env,
                          concurrency, device, n_explanations, cache)
    return expl, sim, list(cache.values())


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
         + ("; ".join(f"{n}x {r}" for r, n in s.failures[:3]) or "none") for s in summaries]))
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
          db: DbOpt = DEFAULT_DB, n_features: NFeaturesOpt = 150,
          random_from: RandomFromOpt = "nonzero", explainer: ExplainerOpt = "inprocess",
          explainer_model: ExplainerModelOpt = None, explainer_base_url: ExplainerUrlOpt = None,
          simulator: SimulatorOpt = "inprocess", simulator_model: SimulatorModelOpt = None,
          simulator_base_url: SimulatorUrlOpt = None, simulator_mode: SimulatorModeOpt = "auto",
          base_url: BaseUrlOpt = None, api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY",
          concurrency: ConcurrencyOpt = 8, explanations_per_feature: NExplOpt = 1,
          selftest: SelftestOpt = True, device: DeviceOpt = "auto", seed: SeedOpt = 0,
          hook: HookOpt = None, force: ForceOpt = False, scorer: ScorerOpt = None,
          workers: WorkersOpt = 1, examples_per_prompt: PerPromptOpt = 10,
          example_tokens: ExampleTokensOpt = 21, quantiles: QuantilesOpt = 10,
          steer_kl: SteerKlOpt = 0.5, steer_prompts: SteerPromptsOpt = 40,
          steer_prompt_tokens: SteerTokensOpt = 32, continuation_tokens: ContinuationOpt = 8,
          intervention_scorer: InterventionByOpt = "subject") -> None:
    """Score dictionaries: sample features, explain their top fragments, simulate, correlate."""
    from autointerp.db import open_db
    from autointerp.scoring.fragments import FragmentConfig
    from autointerp.scoring.pipeline import ScoreConfig
    from autointerp.scoring.scorers import parse_scorers

    if random_from not in ("nonzero", "all") or n_features < 1:
        raise BadInputError(f"--random-from must be nonzero or all (got {random_from!r}) and "
                            f"--n-features at least 1 (got {n_features})")
    for role, backend in (("explainer", explainer), ("simulator", simulator)):
        if backend not in BACKENDS:  # before any model is loaded
            raise BadInputError(f"unknown {role} backend {backend!r}; choose {', '.join(BACKENDS)}")
    if workers < 1 or (workers > 1 and "inprocess" in (explainer, simulator)):
        raise BadInputError(f"--workers must be at least 1, and 1 with an in-process model "
                            f"(each worker would load its own; got {workers})")
    judge = judge_settings(examples_per_prompt, example_tokens, quantiles)
    from autointerp.dictionaries.sources import expand_specs

    dict_ = expand_specs(dict_)  # a sparsify checkpoint root scores every hookpoint
    stores = {d: acts for d in dict_}
    if acts is None and model is not None:
        from autointerp.scoring.stores import HarvestSpec, harvest_for

        stores = harvest_for(dict_, HarvestSpec(model, hook, layer, corpus, tokens, seed, device,
                                                force))
    check_stores(stores, force)  # before any LLM is loaded
    database = open_db(db)
    llm_args = dict(explainer=explainer, explainer_model=explainer_model,
                    explainer_url=explainer_base_url or base_url, simulator=simulator,
                    simulator_model=simulator_model, simulator_mode=simulator_mode,
                    simulator_url=simulator_base_url or base_url, api_key_env=api_key_env,
                    device=device, n_explanations=explanations_per_feature)
    expl, sim, clients = make_llms(database, concurrency=concurrency, **llm_args)
    frag_cfg = FragmentConfig(n_features=n_features, random_from=random_from, seed=seed)
    scorers = parse_scorers(scorer or ["simulation"])  # before any model is loaded
    cfgs = [ScoreConfig(d, stores[d], frag_cfg, explanations_per_feature, concurrency, selftest,
                        force=force, scorers=scorers, judge=judge,
                        steering=steer_settings(steer_kl, steer_prompts, steer_prompt_tokens,
                                                continuation_tokens, seed, intervention_scorer))
            for d in dict_]
    from autointerp.scoring.workers import Workers, concurrency_share, fewer_collections

    fewer_collections()
    share = concurrency_share(concurrency, workers)
    with Workers(workers, str(db), partial(make_llms, concurrency=share, **llm_args)) as pool:
        pool.start()
        summaries = asyncio.run(_score_all(cfgs, expl, sim, database, clients, pool))
    console = Console()
    from autointerp.dictionaries.sources import dictionary_id

    paths = {dictionary_id(c.dictionary): c.dictionary for c in cfgs}
    console.print(summary_table(summaries, [paths.get(s.dictionary) for s in summaries]))
    console.print(cost_table(summaries))
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
