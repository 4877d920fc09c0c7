"""`autointerp demo`: the whole experiment on the offline default, small enough for a
laptop CPU, reusing what exists on a rerun.

harvest SmolLM2-135M (and the same architecture re-initialised: the random-model
control) -> train a TopK SAE on each and fit PCA, ICA, neuron and random
baselines -> simulator self-test -> score a sample of features of every dictionary
with the in-process explainer and simulator, and with the lexical reference ->
compare -> report.

Every step is keyed by its settings: the stores and dictionaries live in folders
named after them, the scores and LLM calls in the database, so a rerun with the
same options skips to the end and a rerun with larger ones adds new folders.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from autointerp.errors import BadInputError

BASELINES = ("pca", "ica", "neurons", "random")
EVAL_FRACTION = 0.2
"""Share of documents held out: scoring needs eval fragments where each sampled feature
fires at least 20 times, more than the default 10% of a small harvest gives."""
MIN_EVAL_FRAGMENTS = 40
SAE_BATCH = 512
"""Activations per Adam step of the demo's SAE. The demo trains on few tokens (500k):
at the library's 4096 that is 122 steps, too few for latents that lose the top-k early
to come back, and 40-48% of them ended dead; 512 gives 976 steps at the same cost."""
SAE_DEAD_TOKENS = 4096
"""A latent silent this long joins the AuxK loss (the library default, n_tokens / 10,
would leave it out for a tenth of this short run)."""
SAE_AUX_COEF = 0.25
"""AuxK weight, above Gao et al.'s 1/32: in a run this short, dead latents need a
stronger pull towards the residual to revive."""


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("results")
    """Tables, plot and report go here; stores and dictionaries under out/demo/."""
    db: Path | None = None
    """Results and LLM-call cache (default: out/autointerp.db)."""
    model: str = "smollm2-135m"
    """Subject model whose activations are cut into features."""
    layer: int = 15
    """Decoder block; 15 of SmolLM2-135M's 30 is a middle layer."""
    hook: str = "resid"
    """resid (the block's output, the paper's choice), mlp or attn."""
    n_tokens: int = 80_000
    """Tokens harvested per model (EVAL_FRACTION held out as eval fragments)."""
    sae_ratio: int = 2
    """SAE width as a multiple of d_model."""
    sae_k: int = 32
    """Active latents per token of the TopK SAE."""
    train_tokens: int = 500_000
    """Activations the SAE trains on (epochs over the harvested ones)."""
    n_fit: int = 10_000
    """Activations the baselines are fit on (FastICA's time grows with it)."""
    n_features: int = 10
    """Features scored per dictionary (the paper: 150)."""
    llm: str | None = "smollm2-135m"
    """In-process explainer and simulator model; None: lexical rows only (no LLM)."""
    simulator_mode: str = "auto"
    random_model: bool = True
    """Also harvest the re-initialised model and train the same SAE on it."""
    lexical: bool = True
    """Also score every dictionary with the lexical explainer and simulator."""
    concurrency: int = 8
    device: str = "auto"
    seed: int = 0
    detection_examples: int = 20
    """Held-out activating examples per feature for detection (and as many checked
    negatives); the score command's default is 50, the demo keeps its extra time small."""
    output_score: bool = True
    """Also score every dictionary's features by steering them (judge-free output score)."""
    steer_prompts: int = 16
    """Held-out prompts steered per feature for the output score (score's default is 40)."""
    intervention: bool = False
    """Also the intervention score of every explanation (LLM and lexical): the subject
    model's log-prob of the explanation after steered text, against shuffled explanations."""

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))
        if self.db is not None:
            object.__setattr__(self, "db", Path(self.db))
        for name in ("n_tokens", "sae_ratio", "sae_k", "train_tokens", "n_fit", "n_features",
                     "concurrency", "detection_examples", "steer_prompts"):
            if getattr(self, name) < 1:
                raise BadInputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.llm is None and not self.lexical:
            raise BadInputError("nothing would score the features: give --llm or --lexical")

    def command(self) -> str:
        """The `autointerp demo` command line that makes this config (non-defaults only)."""
        flags = {"n_tokens": "--tokens", "sae_ratio": "--ratio", "sae_k": "--k",
                 "n_features": "--n-sampled", "simulator_mode": "--scoring-mode"}
        parts = ["autointerp", "demo"]
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if isinstance(value, bool):
                parts.append(f"--{'' if value else 'no-'}{f.name.replace('_', '-')}")
            else:
                flag = flags.get(f.name, "--" + f.name.replace("_", "-"))
                shown = portable_path(value) if isinstance(value, Path) else value
                parts += [flag, "none" if value is None else str(shown)]
        return " ".join(parts)

    @property
    def db_path(self) -> Path:
        return self.db or self.out / "autointerp.db"

    @property
    def work(self) -> Path:
        return self.out / "demo"


@dataclass(frozen=True)
class DemoDictionary:
    """One dictionary to score: its folder and the label its rows get in the table."""

    label: str
    path: Path


@dataclass
class DemoResult:
    paths: dict[str, Path]
    verdicts: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


def portable_path(path: Path) -> str:
    """A path as a shareable output records it: relative to the working directory when
    inside it, else `<...>/name`; the folder of the machine that made it means nothing
    to a reader of a committed reference run."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return f"<...>/{resolved.name}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in Path(text).name or text)


def harvest_stores(cfg: DemoConfig) -> dict[str, Path]:
    """Harvest (or reuse) the trained model's store and, with random_model, the control's:
    the same architecture and tokens with its weights re-initialised (seeded)."""
    from autointerp.harvest.run import HarvestConfig, harvest
    from autointerp.harvest.store import ActivationStore

    base = f"{_slug(cfg.model)}-{cfg.hook}.{cfg.layer}-{cfg.n_tokens}-s{cfg.seed}"
    paths = {"trained": cfg.work / "stores" / base}
    if cfg.random_model:
        paths["random-init"] = cfg.work / "stores" / f"{base}-random-init"
    for kind, path in paths.items():
        store = ActivationStore(harvest(HarvestConfig(
            layer=cfg.layer, hook=cfg.hook, out=path, model=cfg.model, n_tokens=cfg.n_tokens,
            eval_fraction=EVAL_FRACTION, seed=cfg.seed, device=cfg.device,
            random_init=cfg.seed if kind == "random-init" else None)))
        if store.n_eval_fragments < MIN_EVAL_FRAGMENTS:
            raise BadInputError(
                f"the harvest held out only {store.n_eval_fragments} eval fragments (need "
                f"{MIN_EVAL_FRAGMENTS}: a scored feature must fire in 20); raise --tokens")
    return paths


def build_dictionaries(cfg: DemoConfig, stores: dict[str, Path]) -> list[DemoDictionary]:
    """The SAE on every store, the baselines on the trained model's; each folder is named
    by its settings, so a rerun reuses it and other settings never collide with it."""
    from autointerp.baselines.directions import fit_from_store
    from autointerp.harvest.store import ActivationStore
    from autointerp.sae.config import TrainConfig
    from autointerp.sae.run import train_from_store

    out = []
    for kind, path in stores.items():
        store, folder = ActivationStore(path), cfg.work / "dictionaries" / path.name
        sae = TrainConfig(arch="topk", n_features=cfg.sae_ratio * store.d_model,
                          n_tokens=cfg.train_tokens, k=cfg.sae_k, seed=cfg.seed,
                          batch_size=SAE_BATCH, dead_tokens=SAE_DEAD_TOKENS,
                          aux_coef=SAE_AUX_COEF)
        sae_dir = folder / f"topk-x{cfg.sae_ratio}-k{cfg.sae_k}-{cfg.train_tokens}-b{SAE_BATCH}"
        train_from_store(store, sae_dir, sae, cfg.device)
        label = "topk" if kind == "trained" else f"topk, {kind} model"
        out.append(DemoDictionary(label, sae_dir))
        if kind == "trained":
            # The floor every method's margin is measured from (results/checks.py).
            from autointerp.baselines.random_sae import METHOD, random_sae_from

            rnd_dir = folder / f"{METHOD}-{sae_dir.name}-s{cfg.seed}"
            random_sae_from(sae_dir, store, rnd_dir, cfg.seed)
            out.append(DemoDictionary(METHOD, rnd_dir))
            for method in BASELINES:
                fit_from_store(store, folder / f"{method}-{cfg.n_fit}", method, cfg.seed, cfg.n_fit)
                out.append(DemoDictionary(method, folder / f"{method}-{cfg.n_fit}"))
    return out


SCORERS = ("simulation", "detection", "fuzzing")
"""The demo scores every dictionary three ways: the paper's scorer, and detection and
fuzzing, the most stable ones, which score dense baseline features by the threshold rule."""


def _scorers(cfg: DemoConfig, db) -> list[tuple[str, object, object]]:
    """(label suffix, explainer, simulator): the in-process LLM, then the lexical reference."""
    from autointerp.scoring.llms import make_explainer, make_simulator

    scorers, cache = [], {}
    for backend, suffix, wanted in (("inprocess", "", cfg.llm is not None),
                                    ("lexical", " (lexical)", cfg.lexical)):
        if wanted:
            args = (cfg.concurrency, cfg.device)
            simulator = make_simulator(db, backend, cfg.llm, cfg.simulator_mode, None,
                                       "OPENAI_API_KEY", *args, cache)
            explainer = make_explainer(db, backend, cfg.llm, None, "OPENAI_API_KEY", *args, 1,
                                       cache)
            scorers.append((suffix, explainer, simulator))
    return scorers


async def _score_all(cfg: DemoConfig, dictionaries: list[DemoDictionary], trained_store: Path,
                     db, console) -> list:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from autointerp.harvest.store import ActivationStore
    from autointerp.progress import Progress, RichProgress
    from autointerp.scoring.fragments import FragmentConfig
    from autointerp.scoring.pipeline import ScoreConfig, score_dictionary_runs
    from autointerp.scoring.scorers import make_scorers
    from autointerp.scoring.selftest import selftest
    from autointerp.scoring.steered import SteerSettings

    fragments = FragmentConfig(n_features=cfg.n_features, seed=cfg.seed,
                               n_held_out=cfg.detection_examples)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[stats]}"))
    summaries = []
    with Progress(*columns, console=console) as bar:
        for i, (suffix, explainer, simulator) in enumerate(_scorers(cfg, db)):
            hooks = RichProgress(bar, [getattr(explainer, "client", None)])
            if simulator.name != "lexical":  # the self-test does not apply to it (compare.py)
                # Run (or read back) first and said out loud: the scores that follow mean
                # nothing if it fails. The score runs find it cached.
                await simulator.prepare()
                for scorer in make_scorers(SCORERS, simulator):
                    task = bar.add_task(f"{scorer.name} self-test {simulator.name}", total=None,
                                        stats="")
                    st = await selftest(simulator, db, store=ActivationStore(trained_store),
                                        on_total=lambda n, t=task: bar.update(t, total=n),
                                        tick=lambda t=task: bar.advance(t), scorer=scorer)
                    console.print(f"{scorer.name} self-test {simulator.name}: "
                                  f"{'passed' if st.passed else 'FAILED'}",
                                  markup=False, highlight=False)
            # The output score ignores the explanation: scored once, beside the first pair;
            # the intervention score is each explanation's, so every pair's.
            steer = cfg.output_score and i == 0
            extra = (("output",) if steer else ()) + (("intervention",) if cfg.intervention else ())
            for d in dictionaries:
                score = ScoreConfig(d.path, fragments=fragments, concurrency=cfg.concurrency,
                                    label=d.label + suffix, scorers=SCORERS + extra,
                                    steering=SteerSettings(n_prompts=cfg.steer_prompts,
                                                           seed=cfg.seed))
                summaries += await score_dictionary_runs(score, explainer, simulator, db, hooks)
    return summaries


def _provenance(cfg: DemoConfig, seconds: dict, cpu_seconds: dict) -> dict:
    """What a reader of a committed reference run needs to redo it. CPU seconds (all
    threads of this process) say what a step costs even on a machine shared with others."""
    import torch

    versions = {p: importlib.metadata.version(p) for p in ("autointerp", "transformers", "numpy",
                                                            "scipy", "scikit-learn")}
    return {"command": cfg.command(),
            "config": {k: portable_path(v) if isinstance(v, Path) else v
                       for k, v in asdict(cfg).items()},
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "cpu_seconds": {k: round(v, 1) for k, v in cpu_seconds.items()},
            "versions": {"python": platform.python_version(), "torch": torch.__version__, **versions},
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                        "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}}


def run_demo(cfg: DemoConfig, console=None) -> DemoResult:
    """Every step in order, each timed; the outputs' paths and the self-test verdicts."""
    from rich.console import Console

    from autointerp.db import open_db
    from autointerp.harvest.store import atomic_write_json
    from autointerp.results.compare import write_comparison
    from autointerp.results.report import write_report

    console = console or Console()
    seconds, cpu, t0, c0 = {}, {}, time.perf_counter(), time.process_time()

    def step(name: str, fn: Callable):
        console.rule(name)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = fn()
        seconds[name] = time.perf_counter() - start
        cpu[name] = time.process_time() - cpu_start
        return result

    db = open_db(cfg.db_path)
    stores = step("harvest", lambda: harvest_stores(cfg))
    dictionaries = step("dictionaries", lambda: build_dictionaries(cfg, stores))
    step("score", lambda: asyncio.run(_score_all(cfg, dictionaries, stores["trained"], db, console)))
    files = step("compare", lambda: write_comparison(db, cfg.out, cfg.seed))
    report = step("report", lambda: write_report(db, cfg.out / "report.html", cfg.seed))
    seconds["total"], cpu["total"] = time.perf_counter() - t0, time.process_time() - c0
    paths = {**files.paths, "report.html": report.path, "database": cfg.db_path,
             **{f"store ({k})": p for k, p in stores.items()},
             **{f"dictionary {d.label}": d.path for d in dictionaries},
             "demo_run.json": cfg.out / "demo_run.json"}
    atomic_write_json(paths["demo_run.json"], _provenance(cfg, seconds, cpu))
    return DemoResult(paths, report.verdicts, seconds)
