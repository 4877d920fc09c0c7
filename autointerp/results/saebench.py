"""`export saebench`: a detection run as an SAEBench autointerp eval output
(sae_bench/evals/autointerp/eval_output.py: AutoInterpEvalOutput and its base,
evals/base_eval_output.py), so that its numbers sit beside SAEBench's.

SAEBench's judge sees 14 sequences per latent, 4 that activate (2 top, 2 importance
sampled) and 10 random ones taken as non-activating, and a latent's score is the share
it classifies correctly. Our detection scores balanced examples, so each feature's
score here is our recall and specificity weighted as SAEBench's mix,
(4 * recall + 10 * specificity) / 14. An answer that says "none" scores 10/14 = 0.714
on that scale, so the chance-corrected column rescales it, (score - 10/14) / (4/14):
0 for an empty answer, 1 for a perfect one, below 0 for worse than saying nothing.
Our own balanced accuracy and each feature's counts are kept per feature in
`eval_result_unstructured`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import numpy as np

from autointerp.errors import BadInputError
from autointerp.results.exported_run import ExportedRun, load_run

N_POSITIVE, N_NEGATIVE = 4, 10
"""SAEBench's scoring mix: n_top_ex_for_scoring + n_iw_sampled_ex_for_scoring = 4
activating, n_random_ex_for_scoring = 10 random sequences."""
FLOOR = N_NEGATIVE / (N_POSITIVE + N_NEGATIVE)

_NUMBER = {"type": "number"}
_NULLABLE_STRING = {"type": ["string", "null"]}
SAEBENCH_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "SAEBench AutoInterp eval output (the fields its types require)",
    "type": "object",
    "required": ["eval_type_id", "eval_config", "eval_id", "datetime_epoch_millis",
                 "eval_result_metrics", "sae_bench_commit_hash", "sae_lens_id",
                 "sae_lens_release_id", "sae_lens_version", "sae_cfg_dict"],
    "properties": {
        "eval_type_id": {"const": "autointerp"},
        "eval_config": {"type": "object", "required": ["model_name"], "properties": {
            "model_name": {"type": "string"},
            "n_latents": {"type": ["integer", "null"]},
            "override_latents": {"type": ["array", "null"], "items": {"type": "integer"}},
            "random_seed": {"type": "integer"},
            "llm_context_size": {"type": "integer"},
            "n_top_ex_for_scoring": {"type": "integer"},
            "n_random_ex_for_scoring": {"type": "integer"},
            "n_iw_sampled_ex_for_scoring": {"type": "integer"}}},
        "eval_id": {"type": "string"},
        "datetime_epoch_millis": {"type": "integer", "minimum": 0, "maximum": 9999999999999},
        "eval_result_metrics": {"type": "object", "required": ["autointerp"], "properties": {
            "autointerp": {"type": "object",
                           "required": ["autointerp_score", "autointerp_std_dev"],
                           # SAEBench's metrics are one flat level of numbers
                           "additionalProperties": _NUMBER,
                           "properties": {"autointerp_score": _NUMBER,
                                          "autointerp_std_dev": _NUMBER}}}},
        "eval_result_details": {"type": ["array", "null"]},
        "sae_bench_commit_hash": {"type": "string"},
        "sae_lens_id": _NULLABLE_STRING,
        "sae_lens_release_id": _NULLABLE_STRING,
        "sae_lens_version": _NULLABLE_STRING,
        "sae_cfg_dict": {"type": ["object", "null"]},
    },
}


@dataclass(frozen=True)
class SaebenchExport:
    out: Path
    n_features: int
    score: float
    chance_corrected: float


def rates(row: dict) -> tuple[float, float, int, int]:
    """(recall, specificity, positives, negatives) of one feature's verdicts, over all its
    explanations' examples."""
    frags = json.loads(row["fragments"] or "{}")
    examples = [x for per in frags.get("examples") or [] for x in per]
    pos = [x["answer"] == 1 for x in examples if x["label"] == 1]
    neg = [x["answer"] == 0 for x in examples if x["label"] == 0]
    if not pos or not neg:
        raise BadInputError(f"feature {row['feature']} has no stored verdicts of both classes")
    return float(np.mean(pos)), float(np.mean(neg)), len(pos), len(neg)


def per_feature(er: ExportedRun) -> dict[str, dict]:
    out = {}
    for row in er.scored:
        recall, specificity, n_pos, n_neg = rates(row)
        score = (N_POSITIVE * recall + N_NEGATIVE * specificity) / (N_POSITIVE + N_NEGATIVE)
        out[str(row["feature"])] = {
            "latent": int(row["feature"]), "explanation": row["explanation"], "score": score,
            "score_chance_corrected": (score - FLOOR) / (1 - FLOOR),
            "balanced_accuracy": row["score"], "recall": recall, "specificity": specificity,
            "n_positive": n_pos, "n_negative": n_neg}
    return out


def _std(xs: list[float]) -> float:
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0  # torch's std, as SAEBench


def _fragment_len(er: ExportedRun) -> int:
    fs = er.fragments
    return len(fs.features[0].top[0].tokens) if fs and fs.features and fs.features[0].top else 64


def _sae_lens_ids(meta: dict) -> tuple[str | None, str | None]:
    source = meta.get("source") or ""
    if source.startswith("saelens:"):
        release, _, sae_id = source[len("saelens:"):].partition("/")
        return sae_id or None, release or None
    return None, None


def build_output(er: ExportedRun) -> dict:
    if er.scorer != "detection":
        raise BadInputError(f"run {er.id[:12]} is a {er.scorer} run; SAEBench's autointerp "
                            "score is a detection score: export a `score --scorer detection` run")
    feats = per_feature(er)
    scores = [f["score"] for f in feats.values()]
    corrected = [f["score_chance_corrected"] for f in feats.values()]
    fr, judge = er.config.get("fragments") or {}, er.config.get("scorer_settings") or {}
    sae_id, release = _sae_lens_ids(er.meta)
    return {
        "eval_type_id": "autointerp",
        "eval_config": {
            "model_name": str(er.meta.get("model") or ""), "n_latents": len(feats),
            "override_latents": [f["latent"] for f in feats.values()],
            "random_seed": int(fr.get("seed", 0)), "llm_context_size": _fragment_len(er),
            "buffer": int(judge.get("example_len", 21)) // 2,
            "n_top_ex_for_generation": int(fr.get("n_shown", 5)),
            "n_iw_sampled_ex_for_generation": 0, "n_top_ex_for_scoring": 2,
            "n_random_ex_for_scoring": N_NEGATIVE, "n_iw_sampled_ex_for_scoring": 2,
            "scoring": True},
        "eval_id": str(uuid.uuid4()),
        "datetime_epoch_millis": int(time.time() * 1000),
        "eval_result_metrics": {"autointerp": {
            "autointerp_score": float(np.mean(scores)), "autointerp_std_dev": _std(scores),
            "autointerp_score_chance_corrected": float(np.mean(corrected)),
            "autointerp_std_dev_chance_corrected": _std(corrected)}},
        "eval_result_details": [],
        "eval_result_unstructured": {"source": "autointerp export saebench", "run_id": er.id,
                                     "explainer": er.run["explainer"],
                                     "judge": er.run["simulator"], "latents": feats},
        "sae_bench_commit_hash": "none: exported by autointerp, not run by SAEBench",
        "sae_lens_id": sae_id, "sae_lens_release_id": release, "sae_lens_version": None,
        "sae_cfg_dict": er.meta.get("hyperparameters") or {
            k: er.meta.get(k) for k in ("model", "hook", "layer", "method", "n_features")},
    }


def export_saebench(db, run: str, out: Path) -> SaebenchExport:
    """Write the eval output to `out` (JSON), validated first, in one rename."""
    er = load_run(db, run)
    doc = build_output(er)
    jsonschema.validate(doc, SAEBENCH_SCHEMA)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out)
    m = doc["eval_result_metrics"]["autointerp"]
    return SaebenchExport(out, doc["eval_config"]["n_latents"], m["autointerp_score"],
                          m["autointerp_score_chance_corrected"])
