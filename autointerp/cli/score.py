"""`autointerp score`: explain-then-simulate scores for one or more dictionaries."""

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
from autointerp.cli.options import DEFAULT_DB, DbOpt, DeviceOpt, SeedOpt
from autointerp.errors import BadInputError
from autointerp.progress import Progress, RichProgress

BACKENDS = ("inprocess", "openai", "lexical")
DEFAULT_INPROCESS_MODEL = "smollm2-135m"

DictOpt = Annotated[list[Path], typer.Option("--dict", help="Dictionary folder to score (repeatable).")]
ActsOpt = Annotated[Path | None, typer.Option("--acts", help="Activation store with the eval fragments; default: the store named in each dictionary's metadata.")]
HarvestModelOpt = Annotated[str | None, typer.Option("--model", help="Harvest activations of this model first (no --acts): HF name or path.")]
LayerOpt = Annotated[int | None, typer.Option("--layer", help="Layer to harvest (with --model).")]
CorpusOpt = Annotated[str | None, typer.Option("--corpus", help="Corpus to harvest (with --model): builtin or a path.")]
TokensOpt = Annotated[int, typer.Option("--tokens", help="Tokens to harvest (with --model).")]
NFeaturesOpt = Annotated[int, typer.Option("--n-features", help="Features sampled per dictionary (among those non-zero in >= 20 fragments).")]
RandomFromOpt = Annotated[str, typer.Option("--random-from", help="Random fragments drawn among fragments where the feature is non-zero (nonzero) or among all (all).")]
ExplainerOpt = Annotated[str, typer.Option("--explainer", help="Explainer backend: inprocess, openai or lexical.")]
ExplainerModelOpt = Annotated[str | None, typer.Option("--explainer-model", help="Explainer model (default: smollm2-135m in process; required for openai).")]
ExplainerUrlOpt = Annotated[str | None, typer.Option("--explainer-base-url", help="Explainer endpoint, overriding --base-url.")]
SimulatorOpt = Annotated[str, typer.Option("--simulator", help="Simulator backend: inprocess, openai or lexical.")]
SimulatorModelOpt = Annotated[str | None, typer.Option("--simulator-model", help="Simulator model (default: smollm2-135m in process; required for openai).")]
SimulatorUrlOpt = Annotated[str | None, typer.Option("--simulator-base-url", help="Simulator endpoint, overriding --base-url.")]
SimulatorModeOpt = Annotated[str, typer.Option("--simulator-mode", help="auto (probe the endpoint), all-at-once, logprobs or json.")]
BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, Ollama), e.g. http://127.0.0.1:8080/v1.")]
ApiKeyEnvOpt = Annotated[str, typer.Option("--api-key-env", help="Environment variable holding the API key (read at call time, never stored).")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", help="Features (and endpoint requests) in flight at once.")]
NExplOpt = Annotated[int, typer.Option("--explanations-per-feature", help="Explanations sampled per feature at temperature > 0; the score is their mean.")]
SelftestOpt = Annotated[bool, typer.Option("--selftest/--no-selftest", help="Run the simulator self-test on planted features first (cached).")]


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


def _ci(s) -> str:
    if math.isnan(s.mean):
        return "-"
    return f"{s.mean:.3f} [{s.lo:.3f}, {s.hi:.3f}]" if not math.isnan(s.lo) else f"{s.mean:.3f}"


def summary_table(summaries) -> Table:
    """One row per dictionary; failure reasons and how the simulator was run as footnotes."""
    spread = any(not math.isnan(s.mean_spread) for s in summaries)
    table = Table(title="Scores per dictionary", caption="\n".join(
        [f"{s.label}: {s.simulator} ({s.notes or s.simulator_mode}); failed: "
         + ("; ".join(f"{n}x {r}" for r, n in s.failures[:3]) or "none") for s in summaries]))
    for col in ("dictionary", "scored", "failed", "skipped", "score [95% CI]",
                *(("spread",) if spread else ()), "self-test"):
        table.add_column(col, overflow="fold")
    for s in summaries:
        verdict = {True: "pass", False: "FAIL", None: "-"}[s.selftest_passed]
        extra = (("-" if math.isnan(s.mean_spread) else f"{s.mean_spread:.3f}",) if spread else ())
        table.add_row(s.label, str(s.n_scored), str(s.n_failed), str(s.n_skipped), _ci(s),
                      *extra, verdict)
    return table


async def _score_all(cfgs, explainer, simulator, db, clients):
    from autointerp.scoring.pipeline import score_dictionary_async

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[stats]}"))
    with Progress(*columns, transient=False) as bar:
        hooks = RichProgress(bar, clients)
        return [await score_dictionary_async(c, explainer, simulator, db, hooks) for c in cfgs]


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
          selftest: SelftestOpt = True, device: DeviceOpt = "auto", seed: SeedOpt = 0) -> None:
    """Score dictionaries: sample features, explain their top fragments, simulate, correlate."""
    from autointerp.db import open_db
    from autointerp.scoring.fragments import FragmentConfig
    from autointerp.scoring.pipeline import ScoreConfig

    if random_from not in ("nonzero", "all") or n_features < 1:
        raise BadInputError(f"--random-from must be nonzero or all (got {random_from!r}) and "
                            f"--n-features at least 1 (got {n_features})")
    for role, backend in (("explainer", explainer), ("simulator", simulator)):
        if backend not in BACKENDS:  # before any model is loaded
            raise BadInputError(f"unknown {role} backend {backend!r}; choose {', '.join(BACKENDS)}")
    database, cache = open_db(db), {}
    sim = make_simulator(database, simulator, simulator_model, simulator_mode,
                         simulator_base_url or base_url, api_key_env, concurrency, device, cache)
    expl = make_explainer(database, explainer, explainer_model, explainer_base_url or base_url,
                          api_key_env, concurrency, device, explanations_per_feature, cache)
    if acts is None and model is not None:
        acts = _harvest(model, layer, corpus, tokens, seed, device)
    frag_cfg = FragmentConfig(n_features=n_features, random_from=random_from, seed=seed)
    cfgs = [ScoreConfig(d, acts, frag_cfg, explanations_per_feature, concurrency, selftest)
            for d in dict_]
    summaries = asyncio.run(_score_all(cfgs, expl, sim, database, list(cache.values())))
    console = Console()
    console.print(summary_table(summaries))
    if any(s.selftest_passed is False for s in summaries):
        console.print("WARNING: the simulator failed its self-test on planted features, so these "
                      "scores are not meaningful (see `autointerp selftest`).", style="bold red",
                      markup=False)


def _harvest(model: str, layer: int | None, corpus: str | None, tokens: int, seed: int,
             device: str) -> Path:
    if layer is None or corpus is None:
        raise BadInputError("--model needs --layer and --corpus (or pass --acts)")
    from autointerp.harvest.run import HarvestConfig, harvest

    return harvest(HarvestConfig(model=model, layer=layer, corpus=corpus, n_tokens=tokens,
                                 seed=seed, device=device))
