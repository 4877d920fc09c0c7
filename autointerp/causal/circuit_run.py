"""`circuit`: trace a target feature's causes through earlier layers' dictionaries and write
circuit.json, circuit.svg and a results-database record."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from autointerp import db as dbm
from autointerp.causal import outputs
from autointerp.causal.bar import PassBar
from autointerp.causal.basis import Basis, load_basis
from autointerp.causal.circuits import MODES, Circuit, Site, Tracer, pad, top_examples, trace
from autointerp.causal.run import common, record
from autointerp.errors import BadInputError
from autointerp.harvest.hooks import parse_hook
from autointerp.harvest.models import load_causal_lm
from autointerp.harvest.store import ActivationStore


@dataclass(frozen=True)
class CircuitConfig:
    dicts: tuple[str, ...]
    """Dictionary folders at earlier layers (the target's is added when missing)."""
    target: str
    """FOLDER:FEATURE"""
    out: str
    acts: str | None = None
    """Store whose eval fragments give the target's top examples (default: the target
    dictionary's own store)."""
    mode: str = "exact"
    top_k: int = 3
    threshold: float = 0.01
    n_examples: int = 20
    context: int = 32
    model: str | None = None
    device: str = "auto"
    max_batch: int = 64

    def __post_init__(self):
        if self.mode not in MODES:
            raise BadInputError(f"unknown --mode {self.mode!r}: use {' or '.join(MODES)}")
        if self.top_k < 1 or self.n_examples < 1 or self.context < 1 or self.max_batch < 1:
            raise BadInputError("--top-k, --n-examples, --context and --max-batch must be >= 1")
        if not 0 <= self.threshold < 1:
            raise BadInputError(f"--threshold is a relative drop in [0, 1), got {self.threshold}")

    def target_parts(self) -> tuple[str, int]:
        path, _, feature = self.target.rpartition(":")
        if not path or not feature.isdigit():
            raise BadInputError(f"--target must be FOLDER:FEATURE (e.g. dicts/topk:123), got {self.target!r}")
        return path, int(feature)


def sites_for(specs: list[str], bases: list[Basis], n_layers: int, model: str) -> list[Site]:
    sites = sorted((Site(parse_hook(b.meta.get("hook", ""), n_layers, model), b) for b in bases),
                   key=lambda s: s.hook.layer)
    layers = [s.hook.layer for s in sites]
    if len(set(layers)) != len(layers):
        raise BadInputError(f"two dictionaries sit at the same layer ({layers}); give one per layer")
    return sites


def explanation(db_path: Path, basis: Basis, feature: int) -> str | None:
    """The feature's explanation from the results database, when it was scored."""
    if basis.dictionary is None or not Path(db_path).exists():
        return None
    db = dbm.open_db(db_path)
    rows = list(db.query(
        "SELECT f.explanation FROM features f JOIN runs r ON f.run_id = r.id WHERE "
        "r.dictionary_id = ? AND f.feature = ? AND f.status = 'scored' ORDER BY f.created_at DESC "
        "LIMIT 1", [basis.dictionary_id, feature]))
    return rows[0]["explanation"] if rows else None


def top_tokens(tracer: Tracer, site: int, feature: int, tokenizer, n: int = 3) -> str:
    acts = tracer.clean[site][..., feature].cpu()  # (examples, seq)
    order = acts.reshape(-1).argsort(descending=True)
    words = []
    for flat in order.tolist():
        if acts.reshape(-1)[flat] <= 0 or len(words) == n:
            break
        word = repr(tokenizer.decode([int(tracer.ids.reshape(-1)[flat])]))
        if word not in words:
            words.append(word)
    return "top tokens " + " ".join(words)


def as_json(circuit: Circuit, tracer: Tracer, cfg: CircuitConfig, db_path: Path, tokenizer) -> dict:
    nodes = []
    for i, n in enumerate(circuit.nodes):
        site = tracer.sites[n.site]
        text = explanation(db_path, site.basis, n.feature)
        nodes.append({"id": i, "layer": site.hook.layer, "hook": site.hook.name,
                      "dictionary": site.basis.label, "path": site.basis.path, "feature": n.feature,
                      "activation": n.activation, "label_source": "explanation" if text else "top tokens",
                      "label": text or top_tokens(tracer, n.site, n.feature, tokenizer)})
    return {"title": f"circuit of {cfg.target} ({cfg.mode}, top {cfg.top_k}, drop >= {cfg.threshold:.0%})",
            "config": asdict(cfg), "nodes": nodes, "edges": [asdict(e) for e in circuit.edges],
            "forward_passes": circuit.n_forward,
            "attribution_vs_exact": [{"attribution": a, "exact": b} for a, b in circuit.checked]}


def run_circuit(cfg: CircuitConfig, db_path: Path, progress=None) -> dict:
    path, feature = cfg.target_parts()
    specs = list(dict.fromkeys((*cfg.dicts, path)))
    bases = [load_basis(s) for s in specs]
    model = common(bases, "model", cfg.model)
    loaded = load_causal_lm(model, cfg.device, dtype="float32")
    sites = sites_for(specs, bases, loaded.n_layers, model)
    target = next(i for i, s in enumerate(sites) if s.basis.path == path)
    acts = cfg.acts or sites[target].basis.meta.get("store")
    if not acts:
        raise BadInputError("the target dictionary names no activation store; give --acts")
    store = ActivationStore(acts)
    if store.meta.get("hook") != sites[target].hook.name:
        raise BadInputError(f"{acts} holds {store.meta.get('hook')} activations, but the target "
                            f"sits at {sites[target].hook.name}")
    windows = top_examples(store, sites[target].basis, feature, cfg.n_examples, cfg.context)
    tok = loaded.tokenizer
    ids, mask = pad(windows, tok.pad_token_id if tok.pad_token_id is not None else 0)
    with torch.no_grad():
        tracer = Tracer(loaded, sites, ids, mask, cfg.max_batch)
    with PassBar(progress).task(f"circuit ({cfg.mode})", target, lambda: tracer.n_forward) as tick:
        circuit = trace(tracer, target, feature, cfg.mode, cfg.top_k, cfg.threshold, tick)
    result = as_json(circuit, tracer, cfg, db_path, tok)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    outputs.write_json(result, out / "circuit.json")
    (out / "circuit.svg").write_text(outputs.circuit_svg(result))
    record(db_path, "circuit", cfg, model, sites[target].hook.name, bases, None, "",
           {k: result[k] for k in ("nodes", "edges", "forward_passes", "attribution_vs_exact")}, out)
    return result
