"""Builders for small real artefacts used across tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from autointerp.store import atomic_write_json, write_shard


def make_store(path: Path, train_acts: torch.Tensor, eval_acts: torch.Tensor, eval_tokens: np.ndarray,
               fragment_len: int = 64, shard_tokens: int = 4096, meta: dict | None = None,
               store_dtype: str = "float16", tokenizer=None) -> Path:
    """Write a complete activation store from in-memory arrays.

    eval_acts: (n_fragments * fragment_len, d_model); eval_tokens: same length, int.
    A tokenizer (any HF tokenizer) is saved when given, so scoring can decode tokens."""
    path = Path(path)
    d_model = train_acts.shape[1]
    shards = {"train": [], "eval": []}
    for i, s in enumerate(range(0, len(train_acts), shard_tokens)):
        chunk = train_acts[s:s + shard_tokens]
        shards["train"].append(write_shard(path / "train", i, store_dtype, chunk,
                                           np.zeros(len(chunk), np.int32)))
    per_shard = max(1, shard_tokens // fragment_len)
    n_frag = len(eval_acts) // fragment_len
    for i, f in enumerate(range(0, n_frag, per_shard)):
        g = min(n_frag, f + per_shard)
        sl = slice(f * fragment_len, g * fragment_len)
        offsets = np.arange(0, (g - f) * fragment_len + 1, fragment_len)
        shards["eval"].append(write_shard(path / "eval", i, store_dtype, eval_acts[sl],
                                          np.asarray(eval_tokens[sl]), offsets))
    if tokenizer is not None:
        tokenizer.save_pretrained(path / "tokenizer")
    info = {
        "status": "complete", "store_dtype": store_dtype, "d_model": d_model,
        "fragment_len": fragment_len, "model": "test-model", "model_hash": "0" * 64,
        "hook": "resid.0", "layer": 0, "shards": shards,
        "n_train_tokens": len(train_acts), "n_eval_tokens": n_frag * fragment_len,
    }
    info.update(meta or {})
    atomic_write_json(path / "metadata.json", info)
    return path
