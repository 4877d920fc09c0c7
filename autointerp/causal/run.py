"""`patch`: identify the features that carry a task, for each dictionary at one hook point,
and write curves.csv, curves.png, costs.csv and a results-database record."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from autointerp import db as dbm
from autointerp.causal import curves, forward, outputs
from autointerp.causal.attribution import ATTRIBUTIONS, attribution_scores
from autointerp.causal.bar import PassBar
from autointerp.causal.basis import Basis, load_basis
from autointerp.causal.patching import METRICS, Patcher
from autointerp.causal.tasks import (
    COUNTERFACTUALS,
    check_task,
    make_ioi,
    read_pairs,
    tokenize_pairs,
    write_pairs,
)
from autointerp.errors import BadInputError
from autointerp.harvest.hooks import parse_hook
from autointerp.harvest.models import load_causal_lm

SELECTIONS = ("greedy",) + ATTRIBUTIONS


@dataclass(frozen=True)
class PatchConfig:
    dicts: tuple[str, ...]
    """Dictionary folders (or rotation:FOLDER for a split baseline as a signed rotation)."""
    task: str
    """ioi, or a JSONL file of clean/counterfactual pairs."""
    out: str
    n_prompts: int = 50
    counterfactual: str = "abb-cbb"
    metric: str = "kl"
    """kl (the paper's) or logit-diff: what greedy and attribution minimise."""
    selections: tuple[str, ...] = SELECTIONS
    n_thresholds: int = 50
    ig_steps: int = 10
    seed: int = 0
    model: str | None = None
    """Defaults to the model named in the dictionaries' metadata."""
    device: str = "auto"
    max_batch: int = 64
    """Sequences per forward pass; bounds memory."""

    def __post_init__(self):
        if not self.dicts:
            raise BadInputError("give at least one --dict")
        if self.metric not in METRICS:
            raise BadInputError(f"unknown --metric {self.metric!r}: use {' or '.join(METRICS)}")
        if self.counterfactual not in COUNTERFACTUALS:
            raise BadInputError(f"unknown --counterfactual {self.counterfactual!r}")
        bad = [s for s in self.selections if s not in SELECTIONS]
        if bad or not self.selections:
            raise BadInputError(f"unknown selection {bad}: use {', '.join(SELECTIONS)}")
        if self.n_thresholds < 1 or self.ig_steps < 1 or self.max_batch < 1 or self.n_prompts < 1:
            raise BadInputError("--n-thresholds, --ig-steps, --max-batch and --n-prompts must be >= 1")


def common(bases: list[Basis], key: str, given: str | None = None) -> str:
    values = {b.meta.get(key) for b in bases}
    if given:
        return given
    if len(values) != 1 or None in values:
        raise BadInputError(f"the dictionaries disagree on (or lack) their {key}: "
                            f"{sorted(map(str, values))}; patch needs one {key} for all")
    return values.pop()


def load_task(cfg: PatchConfig, tokenizer):
    if cfg.task == "ioi":
        return make_ioi(tokenizer, cfg.n_prompts, cfg.seed, cfg.counterfactual)
    if not Path(cfg.task).is_file():
        raise BadInputError(f"--task must be ioi or a JSONL file of pairs; {cfg.task} is neither")
    return read_pairs(cfg.task)[:cfg.n_prompts]


def select(p: Patcher, cfg: PatchConfig, bar: PassBar, costs: list) -> list[curves.CurvePoint]:
    """Every selection method's curve for one basis, with its forward passes and seconds."""
    points = curves.endpoints(p)
    scale = 1.0 if cfg.metric == "kl" else abs(float(p.objective(
        p.evaluate(torch.zeros(1, p.n_active)), cfg.metric)[0])) or 1.0
    for method in cfg.selections:
        n0, s0 = p.n_forward, p.seconds
        with bar.task(f"{p.basis.label}: {method}", cfg.n_thresholds if method == "greedy" else 1,
                      lambda: p.n_forward) as tick:
            if method == "greedy":
                points += curves.greedy(p, cfg.metric, curves.thresholds(cfg.n_thresholds, scale),
                                        cfg.seed, tick)
            else:
                scores = attribution_scores(p, cfg.metric, method, cfg.ig_steps)
                points += curves.topk_curve(p, scores, method)
                tick()
        costs.append({"dictionary": p.basis.label, "method": method, "n_features": p.basis.n_features,
                      "n_active": p.n_active, "forward_passes": p.n_forward - n0,
                      "n_prompts": p.batch.n_prompts, "max_batch": cfg.max_batch,
                      "seconds": round(p.seconds - s0, 2)})
    return points


def run_patch(cfg: PatchConfig, db_path: Path, progress=None, echo=print) -> dict:
    bases = [load_basis(s) for s in cfg.dicts]
    model = common(bases, "model", cfg.model)
    hook_name = common(bases, "hook")
    loaded = load_causal_lm(model, cfg.device, dtype="float32")
    hook = parse_hook(hook_name, loaded.n_layers, model)
    pairs = load_task(cfg, loaded.tokenizer)
    batch = tokenize_pairs(loaded.tokenizer, pairs)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_pairs(pairs, out / "pairs.jsonl")
    with torch.inference_mode():
        logits = forward.run(loaded, batch.clean_ids, batch.mask)
    check = check_task(logits[torch.arange(batch.n_prompts), batch.last].float(), batch)
    warning = "" if check is None or check.passed else check.line()
    echo(check.line() if check else "task check: the pairs give no answer tokens; skipped")
    points, costs = [], []
    bar = PassBar(progress)
    for b in bases:
        points += select(Patcher(loaded, hook, b, batch, cfg.max_batch), cfg, bar, costs)
    table = outputs.curves_table(points, warning)
    table.to_csv(out / "curves.csv", index=False)
    outputs.write_json({"costs": costs}, out / "costs.json")
    title = (f"{model} {hook_name}, task {Path(cfg.task).name} ({batch.n_prompts} prompts), "
             f"metric {cfg.metric}" + (f"\n{warning}" if warning else ""))
    outputs.plot_curves(points, out / "curves.png", title)
    summary = {"points": [asdict(p) for p in points], "costs": costs}
    record(db_path, "patch", cfg, model, hook_name, bases, check, warning, summary, out)
    return {"check": check, "warning": warning, "table": table, "costs": costs}


def record(db_path: Path, kind: str, cfg, model: str, hook: str, bases: list[Basis], check,
           warning: str, summary: dict, out: Path) -> str:
    config = dbm.dumps({k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()})
    row_id = hashlib.sha256(f"{kind}:{config}".encode()).hexdigest()
    db = dbm.open_db(db_path)
    db["causal_runs"].upsert({
        "id": row_id, "kind": kind, "model": model, "hook": hook, "task": str(cfg.task if kind == "patch"
                                                                                else cfg.target),
        "dictionaries": dbm.dumps([{"label": b.label, "id": b.dictionary_id, "path": b.path}
                                   for b in bases]),
        "config": config, "task_check": None if check is None else dbm.dumps(asdict(check)),
        "warning": warning, "summary": json.dumps(summary, default=_plain), "out": str(out),
        "created_at": dbm.now()}, pk="id")
    return row_id


def _plain(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x).__name__)
