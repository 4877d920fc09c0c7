"""The output tokens a feature's decoder direction promotes and suppresses: its direction
times the model's unembedding, W_U @ W_dec[f] (Neuronpedia's "top positive / negative
logits", read the same way: before the final norm, so a ranking, not calibrated logits).
Needs the model to load (locally: SmolLM2 and any cached HF model); else the reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from autointerp.errors import AutointerpError


@dataclass(frozen=True)
class DecoderTokens:
    promoted: tuple[tuple[str, float], ...]
    """(token, logit contribution), largest first."""
    suppressed: tuple[tuple[str, float], ...]
    """Most negative first."""


def _random_init(meta: dict) -> int | None:
    """The random-model control's seed, recorded by the store the dictionary was fit on."""
    import json

    if "random_init" in meta:
        return meta["random_init"]
    info = Path(meta.get("store") or "/nonexistent") / "metadata.json"
    return json.loads(info.read_text()).get("random_init") if info.is_file() else None


def _unembedding(meta: dict, models: dict):
    """(W_U (vocab, d_model), decode) of the dictionary's model, loaded once per model."""
    from autointerp.harvest.models import load_causal_lm
    from autointerp.scoring.fragments import token_decoder

    key = (meta.get("model"), _random_init(meta))
    if key not in models:
        loaded = load_causal_lm(key[0], "cpu", "float32", key[1])
        W_U = loaded.model.get_output_embeddings().weight.detach().float()
        models[key] = (W_U, token_decoder(loaded.tokenizer))
    return models[key]


def decoder_tokens(path: str | Path, features: list[int], k: int = 10,
                   models: dict | None = None) -> dict[int, DecoderTokens] | str:
    """Per feature, the k tokens its decoder direction promotes and suppresses most; or
    one line saying why they cannot be had (no dictionary file, model not loadable,
    decoder not in the residual basis)."""
    from autointerp.dictionaries.sources import load_dictionary

    models = {} if models is None else models
    try:
        dictionary = load_dictionary(path)
        if not dictionary.meta.get("model"):
            return "the dictionary does not name its model"
        W_U, decode = _unembedding(dictionary.meta, models)
    except (AutointerpError, OSError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    W_dec = dictionary.W_dec.detach().float()  # (n_features, d_model)
    if W_dec.shape[1] != W_U.shape[1]:
        return f"decoder width {W_dec.shape[1]} is not the model's d_model {W_U.shape[1]}"
    rows = torch.as_tensor(features, dtype=torch.long)
    logits = W_dec[rows] @ W_U.T  # (n, vocab)
    up, down = logits.topk(k, dim=1), (-logits).topk(k, dim=1)
    out = {}
    for j, f in enumerate(features):
        def pairs(idx, vals, sign):
            return tuple((tok, round(sign * float(v), 3))
                         for tok, v in zip(decode(idx.numpy()), vals, strict=True))
        out[f] = DecoderTokens(pairs(up.indices[j], up.values[j], 1),
                               pairs(down.indices[j], down.values[j], -1))
    return out
