"""Shared by the detection and fuzzing tests: a store with sparse planted features whose
per-fragment strength varies (so activation quantiles mean something), and fake judge
endpoints (oracle, random, always 1) that answer through the LLM client contract."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import torch

from autointerp.llm.base import Completion, TokenLogprob, Usage
from tests.helpers import FakeClient, make_store, make_tokenizer

N_LIVE = 4
"""Features 0..3 fire; the rest of the 8 are dead."""


def sparse_planted(path: Path, n_fragments: int = 240, d_model: int = 8, seed: int = 0,
                   lexical: bool = False):
    """Feature j < N_LIVE fires in a seeded share (15-45%) of fragments, on 1-4 tokens, at a
    strength drawn per fragment from U(0.2, 5): a spread of maxima to bin by quantile.
    With `lexical`, feature j fires instead wherever one token id (its own) occurs, at a
    strength drawn per fragment. Returns (store path, dictionary path)."""
    from autointerp.dictionaries.dictionary import Dictionary

    tokenizer = make_tokenizer()
    rng = np.random.default_rng(seed)
    # Random token ids, so no two example windows share a text (an oracle judge reads
    # the truth from the text); id 0 is the special token.
    ids = rng.integers(1, len(tokenizer), size=n_fragments * 64).astype(np.int32)
    acts = -0.01 * torch.rand(n_fragments * 64, d_model, generator=torch.Generator().manual_seed(seed))
    for j in range(N_LIVE if lexical else 0):
        for f in range(n_fragments):
            pos = np.flatnonzero(ids[f * 64:(f + 1) * 64] == 10 + j)
            acts[f * 64 + pos, j] = float(rng.uniform(0.2, 5.0))
    for j in range(0 if lexical else N_LIVE):
        for f in np.flatnonzero(rng.random(n_fragments) < 0.15 + 0.1 * j):
            pos = rng.choice(64, size=int(rng.integers(1, 5)), replace=False)
            acts[f * 64 + pos, j] = float(rng.uniform(0.2, 5.0))
    W = torch.eye(d_model)
    dictionary = Dictionary(W, torch.zeros(d_model), W.clone(), torch.zeros(d_model),
                            meta={"method": "sparse", "model": "test-model", "hook": "resid.0",
                                  "layer": 0, "l0": 1.0, "fvu": 0.1, "store": str(path / "store")})
    store = make_store(path / "store", acts, acts, ids, tokenizer=tokenizer)
    return store, dictionary.save(path / "dict")


def example_lines(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^\d+\. (.*)$", text, flags=re.M)]


def answer(values: list[int], p1: list[float], prompt_chars: int) -> Completion:
    """A chat answer '[v, ...]' whose digit tokens carry P(1) = p1 among their alternatives."""
    text = json.dumps(values)
    tokens, k = [], 0
    for piece in re.findall(r"\d|[^\d]+", text):
        top = ()
        if piece.isdigit():
            p = min(max(p1[k], 1e-6), 1 - 1e-6)
            top = (("1", math.log(p)), ("0", math.log(1 - p)))
            k += 1
        tokens.append(TokenLogprob(piece, 0.0, top))
    return Completion(text, tokens=tuple(tokens), usage=Usage(prompt_chars // 4, len(tokens)))


def judge_endpoint(truth: dict, policy: str, seed: int = 0) -> FakeClient:
    """A chat endpoint that judges each example line. truth: (explanation, line) -> label.
    oracle: the true label (P(1) 0.9 / 0.1); random: coin flips, uniform P(1);
    always1: 1 with P(1) 0.9 everywhere."""
    rng = np.random.default_rng(seed)

    def respond(request):
        user = request.messages[-1][1]
        explanation = re.search(r"^Explanation: (.*)$", user, flags=re.M).group(1)
        lines = example_lines(user)
        if policy == "oracle":
            values = [truth[explanation, line] for line in lines]
            p1 = [0.9 if v else 0.1 for v in values]
        elif policy == "random":
            p1 = list(rng.random(len(lines)))
            values = [int(p >= 0.5) for p in p1]
        else:
            values, p1 = [1] * len(lines), [0.9] * len(lines)
        return answer(values, p1, sum(len(c) for _, c in request.messages))

    return FakeClient(respond=respond, name=f"judge-{policy}")
