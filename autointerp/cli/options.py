"""Options shared by several commands, declared once (typer `Annotated` style), their
choices as Enums (so `--help` lists them), and the old spellings kept as hidden aliases."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from autointerp.errors import BadInputError
from autointerp.scoring.llms import BACKENDS, MODES
from autointerp.scoring.scorers import OUTPUT_SCORERS, SCORERS

DEFAULT_DB = Path("results/autointerp.db")

Backend = Enum("Backend", {b: b for b in BACKENDS}, type=str)
"""Explainer and scoring-model backends: inprocess, openai, lexical."""
ScoringMode = Enum("ScoringMode", {m: m for m in MODES}, type=str)
ScorerName = Enum("ScorerName", {s: s for s in (*SCORERS, *OUTPUT_SCORERS, "all")}, type=str)


class Arch(str, Enum):
    tied = "tied"
    relu = "relu"
    topk = "topk"


class Method(str, Enum):
    pca = "pca"
    ica = "ica"
    neurons = "neurons"
    random = "random"


class ModelDtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class StoreDtype(str, Enum):
    float16 = "float16"
    bfloat16 = "bfloat16"


class InputTransform(str, Enum):
    none = "none"
    center = "center"
    fold_value_biases = "fold_value_biases"


class Metric(str, Enum):
    kl = "kl"
    logit_diff = "logit-diff"


class RandomFrom(str, Enum):
    nonzero = "nonzero"
    all = "all"


def value(choice) -> str | None:
    """An Enum choice's plain string (the library takes strings); None stays None."""
    return choice.value if isinstance(choice, Enum) else choice


def deprecated(old: str, new: str, old_value, new_value, default):
    """Resolve a hidden old spelling: its value, with a deprecation line on stderr, unless the
    new spelling was given too (then they must agree)."""
    if old_value is None:
        return new_value
    print(f"warning: {old} is deprecated; use {new}", file=sys.stderr)
    if value(new_value) != value(default) and value(new_value) != value(old_value):
        raise BadInputError(f"{old} (deprecated) and {new} disagree; give {new} only")
    return old_value


INPUTS, EXPLAINER, SCORING, SCORERS_PANEL, RUN = (
    "Inputs", "Explainer", "Scoring model", "Scorers", "Run")

DbOpt = Annotated[Path, typer.Option("--db", help="Results and LLM-call cache database (SQLite).", rich_help_panel=RUN)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.", rich_help_panel=RUN)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present, else CPU), cpu or cuda[:N].", rich_help_panel=RUN)]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output made with other arguments.")]

# The scoring model: the simulator, and the judge of every other scorer.
ScoringBackendOpt = Annotated[Backend, typer.Option("--scoring-backend", help="Backend of the scoring model (the simulator, and the judge of every other scorer).", rich_help_panel=SCORING)]
ScoringModelOpt = Annotated[str | None, typer.Option("--scoring-model", help="Scoring model (default: smollm2-135m in process; required for openai).", rich_help_panel=SCORING)]
ScoringUrlOpt = Annotated[str | None, typer.Option("--scoring-base-url", help="Scoring model's endpoint, overriding --base-url.", rich_help_panel=SCORING)]
ScoringModeOpt = Annotated[ScoringMode, typer.Option("--scoring-mode", help="How the scoring model is read: auto probes the endpoint.", rich_help_panel=SCORING)]
OldBackendOpt = Annotated[Backend | None, typer.Option("--simulator", hidden=True, help="Deprecated: --scoring-backend.")]
OldModelOpt = Annotated[str | None, typer.Option("--simulator-model", hidden=True, help="Deprecated: --scoring-model.")]
OldUrlOpt = Annotated[str | None, typer.Option("--simulator-base-url", hidden=True, help="Deprecated: --scoring-base-url.")]
OldModeOpt = Annotated[ScoringMode | None, typer.Option("--simulator-mode", hidden=True, help="Deprecated: --scoring-mode.")]

BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, Ollama), e.g. http://127.0.0.1:8080/v1.", rich_help_panel=SCORING)]
ApiKeyEnvOpt = Annotated[str, typer.Option("--api-key-env", help="Environment variable holding the API key (read at call time, never stored).", rich_help_panel=SCORING)]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", help="Features (and endpoint requests) in flight at once.", rich_help_panel=RUN)]

ScorerOpt = Annotated[list[ScorerName] | None, typer.Option("--scorer", help="Scorer of the explanations (repeatable; all: simulation, detection and fuzzing). output and intervention steer the feature in the subject model and are asked for by name. Every scorer scores the same explanation. Default: simulation.", rich_help_panel=SCORERS_PANEL)]
PerPromptOpt = Annotated[int, typer.Option("--examples-per-prompt", help="Detection and fuzzing: held-out examples judged in one prompt (1-50).", rich_help_panel=SCORERS_PANEL)]
ExampleTokensOpt = Annotated[int, typer.Option("--example-tokens", help="Detection and fuzzing: tokens per example, a window of its fragment (at most the store's fragment length, 64) around the maximum (SAEBench shows 21, delphi 32).", rich_help_panel=SCORERS_PANEL)]
QuantilesOpt = Annotated[int, typer.Option("--quantiles", help="Detection and fuzzing: activation quantile bins of the activating examples; recall is reported per bin.", rich_help_panel=SCORERS_PANEL)]


def scoring_model(backend, model, url, mode, old_backend, old_model, old_url, old_mode,
                  defaults=("inprocess", None, None, "auto")) -> tuple:
    """(backend, model, base url, mode) as plain strings, the deprecated `--simulator*`
    spellings folded in."""
    pairs = (("--simulator", "--scoring-backend", old_backend, backend),
             ("--simulator-model", "--scoring-model", old_model, model),
             ("--simulator-base-url", "--scoring-base-url", old_url, url),
             ("--simulator-mode", "--scoring-mode", old_mode, mode))
    return tuple(value(deprecated(o, n, ov, nv, d))
                 for (o, n, ov, nv), d in zip(pairs, defaults, strict=True))


def scorer_names(scorer: list | None) -> tuple[str, ...]:
    from autointerp.scoring.scorers import parse_scorers

    return parse_scorers([value(s) for s in scorer or ["simulation"]])
