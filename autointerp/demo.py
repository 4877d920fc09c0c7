"""`autointerp demo`: the whole experiment on the offline default, small enough for a
laptop CPU, reusing what exists on a rerun.

harvest SmolLM2-135M (and the same architecture re-initialised: the random-model
control, issue 7.3) -> train a TopK SAE on each and fit PCA, ICA, neuron and random
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
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autointerp.errors import BadInputError
from autointerp.store import atomic_write_json

BASELINES = ("pca", "ica", "neurons", "random")


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("results")
    """Tables, plot and report go here; stores and dictionaries under out/demo/."""
    db: Path | None = None
    """Results and LLM-call cache (default: out/autointerp.db)."""
    model: str = "smollm2-135m"
    """Subject model whose activations are cut into features."""
    hook: str = "resid.15"
    """Residual stream after layer 15 of SmolLM2-135M's 30: a middle layer."""
    n_tokens: int = 100_000
    """Tokens harvested per model (10% held out as eval fragments)."""
    sae_ratio: int = 2
    """SAE width as a multiple of d_model."""
    sae_k: int = 32
    """Active latents per token of the TopK SAE."""
    train_tokens: int = 1_000_000
    """Activations the SAE trains on (epochs over the harvested ones)."""
    n_features: int = 24
    """Features scored per dictionary (the paper: 150)."""
    llm: str = "smollm2-135m"
    """In-process explainer and simulator model."""
    simulator_mode: str = "auto"
    random_model: bool = True
    """Also harvest the re-initialised model and train the same SAE on it."""
    lexical: bool = True
    """Also score every dictionary with the lexical explainer and simulator."""
    concurrency: int = 8
    device: str = "auto"
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))
        if self.db is not None:
            object.__setattr__(self, "db", Path(self.db))
        for name in ("n_tokens", "sae_ratio", "sae_k", "train_tokens", "n_features", "concurrency"):
            if getattr(self, name) < 1:
                raise BadInputError(f"--{name.replace('_', '-')} must be at least 1")

    @property
    def db_path(self) -> Path:
        return self.db or self.out / "autointerp.db"

    @property
    def work(self) -> Path:
        return self.out / "demo"


@dataclass(frozen=True)
class Dict:
    """One dictionary to score: its folder and the label its rows get in the table."""

    label: str
    path: Path


@dataclass
class DemoResult:
    paths: dict[str, Path]
    verdicts: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in Path(text).name or text)


def stores(cfg: DemoConfig) -> dict[str, Path]:
    """Harvest (or reuse) the trained model's store and, with random_model, the control's."""
    from autointerp.harvest import HarvestConfig, harvest

    base = f"{_slug(cfg.model)}-{cfg.hook}-{cfg.n_tokens}"
    out = {"trained": cfg.work / "stores" / base}
    if cfg.random_model:
        out["random model"] = cfg.work / "stores" / f"{base}-random-init{cfg.seed}"
    for kind, path in out.items():
        harvest(HarvestConfig(out=path, hook=cfg.hook, model=cfg.model, n_tokens=cfg.n_tokens,
                              seed=cfg.seed, device=cfg.device,
                              random_init=cfg.seed if kind == "random model" else None))
    return out
