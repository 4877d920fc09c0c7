"""What Neuronpedia's upload takes: a JSON Schema of one `upload_batch` request.

The `neuronpedia` client (PyPI, 1.2.1) has no request schema of its own: its
`FeatureRequest.upload_batch` turns `Feature` dataclasses into a JSON payload and
refuses more than 128 features, and the server validates the rest. This schema is
written from that server's limits (Neuronpedia's webapp, app/api/feature/upload-batch:
its yup schema) and its two checks beyond them, done in `check_batch`: each
activation's tokens and values of equal length, and every index once per batch.
"""

from __future__ import annotations

import jsonschema

MAX_FEATURES = 128
MAX_LOGITS = 20
MAX_EXPLANATION_CHARS = 512
MAX_TOKENS = 1024
MAX_INDEX = 10_000_000

_LOGITS = {"type": ["array", "null"], "maxItems": MAX_LOGITS,
           "items": {"type": "object", "required": ["token", "value"],
                     "properties": {"token": {"type": "string"}, "value": {"type": "number"}}}}
_BIN = {"type": ["number", "null"], "maximum": 99999999}

UPLOAD_BATCH_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Neuronpedia upload-batch request",
    "type": "object",
    "required": ["modelId", "source", "features"],
    "properties": {
        "modelId": {"type": "string", "minLength": 1, "pattern": "^[^A-Z]*$"},
        "source": {"type": "string", "minLength": 1, "pattern": "^[^A-Z]*$"},
        "features": {"type": "array", "minItems": 1, "maxItems": MAX_FEATURES, "items": {
            "type": "object",
            "required": ["index", "activations"],
            "properties": {
                "index": {"type": "integer", "minimum": 0, "maximum": MAX_INDEX},
                "density": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "topLogits": _LOGITS,
                "bottomLogits": _LOGITS,
                "explanations": {"type": "array", "items": {
                    "type": "object", "required": ["text"],
                    "properties": {
                        "text": {"type": "string", "minLength": 1,
                                 "maxLength": MAX_EXPLANATION_CHARS},
                        "methodName": {"type": ["string", "null"]},
                        "modelName": {"type": ["string", "null"]}}}},
                "activations": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["tokens", "values"],
                    "properties": {
                        # item types are checked in batch_errors: jsonschema descending
                        # into every token took 36 s a batch of 128 features
                        "tokens": {"type": "array", "minItems": 1, "maxItems": MAX_TOKENS},
                        "values": {"type": "array", "minItems": 1, "maxItems": MAX_TOKENS},
                        "quantileMax": _BIN,
                        "quantileMin": _BIN,
                        "quantileFraction": {"type": ["number", "null"], "minimum": 0,
                                             "maximum": 1}}}}}}},
    },
}


def _activation_errors(act, where: str) -> list[str]:
    if not isinstance(act, dict):
        return []
    tokens, values = act.get("tokens") or [], act.get("values") or []
    out = []
    if len(tokens) != len(values):
        out.append(f"{where}: {len(tokens)} tokens but {len(values)} values")
    if not all(isinstance(t, str) for t in tokens):
        out.append(f"{where}/tokens: a token is not a string")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        out.append(f"{where}/values: a value is not a number")
    return out


def batch_errors(batch: dict) -> list[str]:
    """Every way `batch` breaks the upload's rules, one line each (empty: it is valid)."""
    validator = jsonschema.Draft202012Validator(UPLOAD_BATCH_SCHEMA)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or 'batch'}: {e.message}"
              for e in validator.iter_errors(batch)]
    features = batch.get("features") if isinstance(batch, dict) else None
    for i, feat in enumerate(features if isinstance(features, list) else []):
        for j, act in enumerate(feat.get("activations") or [] if isinstance(feat, dict) else []):
            errors += _activation_errors(act, f"features/{i}/activations/{j}")
    indices = [f.get("index") for f in features or [] if isinstance(f, dict)]
    if len(set(map(str, indices))) != len(indices):
        errors.append("features: an index appears twice in one batch")
    return errors
