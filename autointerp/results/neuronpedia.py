"""`export neuronpedia`: a scored run as the batches Neuronpedia's upload takes, plus our
scores beside them.

Per feature (the `neuronpedia` client's `upload_batch` payload, at most 128 a batch):
index; density (the share of eval tokens where it fires, estimated from the fragment
set: fragments where it fires times the share of their tokens it fires on); topLogits
and bottomLogits (the 20 output tokens its decoder direction promotes and suppresses,
logit_lens.py, where the model loads); the explanation with a method and model name;
and activations: its top fragments, then its held-out fragments in activation quantile
bins, each with tokens, values and the bin's range and share of firing fragments.

Neuronpedia takes no scores through the upload, so they go in `scores.jsonl`, one row
per feature in the shape of its ExplanationScore rows (value, score type name, score
model name, jsonDetails with the per-example details). Every batch is validated
(neuronpedia_schema.py) before anything is written, and the folder appears whole.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autointerp.dictionaries.neuronpedia import NeuronpediaTarget, neuronpedia_target
from autointerp.errors import BadInputError
from autointerp.results.exported_run import ExportedRun, load_run, write_replacing
from autointerp.results.neuronpedia_schema import (
    MAX_EXPLANATION_CHARS,
    MAX_FEATURES,
    MAX_LOGITS,
    MAX_TOKENS,
    batch_errors,
)

MANIFEST = "manifest.json"
N_BINS = 5
"""Quantile bins of the held-out fragments (50 by default: 10 a bin)."""


@dataclass(frozen=True)
class NeuronpediaExport:
    out: Path
    target: NeuronpediaTarget
    n_features: int
    n_batches: int
    n_failed: int
    """Features of the run that failed (no explanation or score to export)."""
    logits: str
    """'included', or why the logits are left out."""
    n_cut: int
    """Explanations cut to 512 characters."""


def explainer_names(explainer: str) -> tuple[str, str]:
    """(methodName, modelName) for Neuronpedia. Our LLM explainer asks Bills et al.'s
    token-activation-pair prompt, Neuronpedia's `oai_token-act-pair`."""
    if explainer.startswith("llm:"):
        model = explainer.split(":", 2)[-1].split(" ")[-1].rsplit("/", 1)[-1]
        return "oai_token-act-pair", model.lower()
    return f"autointerp-{explainer.split(':')[0]}", explainer.replace(":", "-").lower()


def _fragments(er: ExportedRun) -> dict:
    return {ff.feature: ff for ff in (er.fragments.features if er.fragments else ())}


def density(ff, n_fragments: int, random_from: str) -> float | None:
    """Share of eval tokens where the feature fires (see the module docstring)."""
    sample = ff.held_out or ff.random
    if not sample or not n_fragments:
        return None
    share = float(np.mean([np.mean(np.asarray(f.activations) > 0) for f in sample]))
    firing = 1.0 if random_from == "all" and not ff.held_out else ff.n_nonzero / n_fragments
    return min(1.0, firing * share)


def _activation(f, lo: float, hi: float, fraction: float) -> dict:
    return {"tokens": [str(t) for t in f.tokens][:MAX_TOKENS],
            "values": [round(float(a), 4) for a in f.activations][:MAX_TOKENS],
            "quantileMax": round(hi, 4), "quantileMin": round(lo, 4),
            "quantileFraction": min(1.0, fraction)}


def activations(ff) -> list[dict]:
    """Top fragments (one bin), then held-out fragments in N_BINS bins by their maximum."""
    peaks = [max(f.activations) for f in ff.top]
    out = [_activation(f, min(peaks), max(peaks), len(ff.top) / max(1, ff.n_nonzero))
           for f in ff.top]
    held = sorted(ff.held_out, key=lambda f: max(f.activations))
    for part in np.array_split(np.arange(len(held)), min(N_BINS, len(held))) if held else []:
        frags = [held[i] for i in part]
        peaks = [max(f.activations) for f in frags]
        out += [_activation(f, min(peaks), max(peaks), len(frags) / len(held)) for f in frags]
    return out


def _stored_activations(row: dict) -> list[dict]:
    """Without the fragment set: the explainer's and scoring fragments of the row."""
    frags = json.loads(row["fragments"] or "{}")
    return [{"tokens": [str(t) for t in f["tokens"]][:MAX_TOKENS],
             "values": [round(float(a), 4) for a in f["activations"]][:MAX_TOKENS],
             "quantileMax": None, "quantileMin": None, "quantileFraction": None}
            for f in frags.get("explainer", []) + frags.get("scoring", [])]


def _cut(text: str) -> str:
    return text if len(text) <= MAX_EXPLANATION_CHARS else text[:MAX_EXPLANATION_CHARS - 1] + "…"


def _logits(er: ExportedRun, features: list[int], enabled: bool) -> tuple[dict, str]:
    if not enabled:
        return {}, "left out (--no-logits)"
    from autointerp.results.logit_lens import decoder_tokens

    if not er.dictionary_path or not Path(er.dictionary_path).exists():
        return {}, "left out: the dictionary file is not on this machine"
    got = decoder_tokens(er.dictionary_path, features, k=MAX_LOGITS)
    return (got, "included") if isinstance(got, dict) else ({}, f"left out: {got}")


def feature_payload(row: dict, ff, er: ExportedRun, names: tuple[str, str], lens) -> dict:
    fs = er.fragments
    random_from = (er.config.get("fragments") or {}).get("random_from", "nonzero")

    def pairs(ps):
        return [{"token": t, "value": v} for t, v in ps[:MAX_LOGITS]]
    return {
        "index": int(row["feature"]),
        "density": density(ff, fs.n_fragments, random_from) if ff is not None else None,
        "topLogits": pairs(lens.promoted) if lens is not None else None,
        "bottomLogits": pairs(lens.suppressed) if lens is not None else None,
        "explanations": [{"text": _cut(row["explanation"]), "methodName": names[0],
                          "modelName": names[1]}],
        "activations": activations(ff) if ff is not None else _stored_activations(row),
    }


def score_row(row: dict, er: ExportedRun, target: NeuronpediaTarget) -> dict:
    """One ExplanationScore-shaped row: value, type, model and the details as JSON text."""
    frags = json.loads(row["fragments"] or "{}")
    details = {k: frags[k] for k in ("scoring", "simulations", "examples") if k in frags}

    def num(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
    details.update(run_id=er.id, scorer=er.scorer, score_top=num(row["score_top"]),
                   score_random=num(row["score_random"]), auroc=num(row["auroc"]),
                   constant=bool(row["constant"]))
    return {"modelId": target.model_id, "layer": target.source, "index": str(row["feature"]),
            "explanation": _cut(row["explanation"]), "value": num(row["score"]),
            "explanationScoreTypeName": f"autointerp-{er.scorer}",
            "explanationScoreModelName": er.run["simulator"].replace(":", "-").lower(),
            "jsonDetails": json.dumps(details, ensure_ascii=False, allow_nan=False)}


def build_batches(er: ExportedRun, target: NeuronpediaTarget, names: tuple[str, str],
                  lenses: dict) -> list[dict]:
    frags = _fragments(er)
    feats = [feature_payload(r, frags.get(r["feature"]), er, names, lenses.get(r["feature"]))
             for r in er.scored]
    return [{"modelId": target.model_id, "source": target.source,
             "features": feats[i:i + MAX_FEATURES]} for i in range(0, len(feats), MAX_FEATURES)]


def client_features(batch: dict) -> list:
    """A batch file as the `neuronpedia` client's Feature objects, for its own upload:
    `FeatureRequest().upload_batch(batch["modelId"], batch["source"], client_features(batch))`
    sends exactly the batch (`pip install neuronpedia`)."""
    from neuronpedia.np_activation import Activation
    from neuronpedia.np_explanation import Explanation
    from neuronpedia.np_feature import Feature, Logit

    model, source = batch["modelId"], batch["source"]

    def logits(xs):
        return None if xs is None else [Logit(x["token"], x["value"]) for x in xs]
    return [Feature(model, source, f["index"], f.get("density"), logits(f.get("topLogits")),
                    logits(f.get("bottomLogits")),
                    [Explanation(model, source, f["index"], e["text"], e.get("methodName"),
                                 e.get("modelName")) for e in f.get("explanations") or []],
                    [Activation(model, source, f["index"], **a) for a in f["activations"]])
            for f in batch["features"]]


def export_neuronpedia(db, run: str, out: Path, model_id: str | None = None,
                       source: str | None = None, method_name: str | None = None,
                       model_name: str | None = None, logits: bool = True) -> NeuronpediaExport:
    er = load_run(db, run)
    target = neuronpedia_target(er.meta)
    target = NeuronpediaTarget((model_id or target.model_id).lower(),
                               (source or target.source).lower(), target.known)
    names = explainer_names(er.run["explainer"])
    names = ((method_name or names[0]).lower(), (model_name or names[1]).lower())
    lenses, logits_note = _logits(er, [r["feature"] for r in er.scored], logits)
    batches = build_batches(er, target, names, lenses)
    for i, batch in enumerate(batches):
        errors = batch_errors(batch)
        if errors:
            raise BadInputError(f"batch {i} breaks Neuronpedia's upload rules: {errors[0]}")
    scores = [score_row(r, er, target) for r in er.scored]
    manifest = {"run_id": er.id, "label": er.run.get("label"), "modelId": target.model_id,
                "source": target.source, "neuronpedia_id_known": target.known,
                "n_features": len(scores), "n_batches": len(batches),
                "n_failed": len(er.features) - len(er.scored), "logits": logits_note,
                "explanation": {"methodName": names[0], "modelName": names[1]},
                "scorer": er.scorer, "explainer": er.run["explainer"],
                "simulator": er.run["simulator"]}

    def write(tmp: Path) -> None:
        for i, batch in enumerate(batches):
            (tmp / f"batch-{i}.json").write_text(json.dumps(batch, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
        (tmp / "scores.jsonl").write_text(
            "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in scores), encoding="utf-8")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    write_replacing(out, write, MANIFEST)
    n_cut = sum(len(r["explanation"]) > MAX_EXPLANATION_CHARS for r in er.scored)
    return NeuronpediaExport(Path(out), target, len(scores), len(batches),
                             manifest["n_failed"], logits_note, n_cut)
