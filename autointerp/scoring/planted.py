"""Planted "oracle" features: features whose true activations we know exactly.

Each one fires on a token, or a class of tokens, of real eval text, and comes
with the one-line explanation a perfect explainer would give. The simulator
self-test (selftest.py) gives a simulator these explanations: a simulator that
cannot predict "the word 'the'" on text it can read cannot score anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from autointerp.errors import BadInputError
from autointerp.scoring.fragments import token_decoder
from autointerp.types import Fragment

PLANTED_VERSION = 1
"""Bump when a definition below changes, so cached self-test results are not reused."""

FIRING = 10.0
"""A planted feature's activation where it fires (0 elsewhere); the scale is that of the
simulator's 0..10 predictions, though Pearson correlation ignores it."""


def _word(*words: str) -> Callable[[str], bool]:
    wanted = {w.lower() for w in words}
    return lambda tok: tok.strip().lower() in wanted


def _punct(chars: str) -> Callable[[str], bool]:
    """A token made of punctuation only (BPE merges '."' into one token) that has one of chars."""

    def fires(tok: str) -> bool:
        s = tok.strip()
        return bool(s) and any(c in s for c in chars) and not any(c.isalnum() for c in s)

    return fires


def _is_digits(tok: str) -> bool:
    return tok.strip().isdigit()


def _is_capitalised(tok: str) -> bool:
    s = tok.strip()
    return s.isalpha() and s[0].isupper()


@dataclass(frozen=True)
class PlantedFeature:
    name: str
    """Short id shown in tables, e.g. 'the', 'digits'."""
    explanation: str
    """The true explanation, worded like an explainer's answer."""
    kind: str
    """'token' (fires on one word or symbol) or 'class' (on a class of tokens)."""
    fires: Callable[[str], bool]
    """Whether the feature fires on a decoded token string."""

    def activations(self, tokens: Iterable[str]) -> tuple[float, ...]:
        return tuple(FIRING if self.fires(t) else 0.0 for t in tokens)


# Single tokens first, then classes, interleaved so that a small n_features still
# tests both kinds. Definitions are disjoint except where English makes them overlap
# ("The" is both 'the' and a capitalised word).
PLANTED: tuple[PlantedFeature, ...] = (
    PlantedFeature("the", "the word 'the'", "token", _word("the")),
    PlantedFeature("digits", "digits and numbers", "class", _is_digits),
    PlantedFeature("comma", "commas", "token", _punct(",")),
    PlantedFeature("capitalised", "words that start with a capital letter", "class", _is_capitalised),
    PlantedFeature("period", "full stops (periods) at the end of sentences", "token", _punct(".")),
    PlantedFeature("close-bracket", "closing brackets and parentheses", "class", _punct(")]}")),
    PlantedFeature("and", "the word 'and'", "token", _word("and")),
    PlantedFeature("pronouns", "personal pronouns such as he, she, they, him, her",
                   "class", _word("he", "she", "they", "him", "her", "them", "we", "us", "you")),
    PlantedFeature("of", "the word 'of'", "token", _word("of")),
    PlantedFeature("quotes", "quotation marks", "class", _punct("\"“”")),
    PlantedFeature("colon", "colons and semicolons", "token", _punct(":;")),
    PlantedFeature("open-bracket", "opening brackets and parentheses", "class", _punct("([{")),
)


@dataclass(frozen=True)
class PlantedCase:
    """One planted feature with its scoring fragments: n_top where it fires, then n_random."""

    feature: PlantedFeature
    fragments: tuple[Fragment, ...]


def smollm2_tokenizer():
    """The offline default model's tokenizer (SmolLM2-135M-Instruct, from the shipped GGUF)."""
    from transformers import AutoTokenizer

    from autointerp.harvest.models import smollm2_folder

    return AutoTokenizer.from_pretrained(smollm2_folder())


def store_fragments(store, max_fragments: int = 1000) -> list[tuple[int, tuple[str, ...]]]:
    """(global index, decoded tokens) of the first max_fragments eval fragments of a store."""
    decode = token_decoder(store.tokenizer())  # as the scoring shows tokens to the simulator
    n = min(max_fragments, store.n_eval_fragments)
    return [(i, tuple(decode(store.eval_fragment_tokens(i)))) for i in range(n)]


def text_fragments(texts: Iterable[str], tokenizer, fragment_len: int = 64,
                   max_fragments: int = 1000) -> list[tuple[int, tuple[str, ...]]]:
    """Tokenize documents and cut them into whole fragment_len-token fragments (index -1:
    not from a store). Documents are tokenized one by one so a fragment never straddles two."""
    decode = token_decoder(tokenizer)
    out: list[tuple[int, tuple[str, ...]]] = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for s in range(0, len(ids) - fragment_len + 1, fragment_len):
            out.append((-1, tuple(decode(ids[s:s + fragment_len]))))
            if len(out) >= max_fragments:
                return out
    return out


def plant(fragments: list[tuple[int, tuple[str, ...]]], n_features: int, seed: int = 0,
          n_top: int = 5, n_random: int = 5) -> list[PlantedCase]:
    """Up to n_features planted cases, in PLANTED order, skipping features that fire in
    fewer than n_top fragments. Like the scoring (Bills et al.; Cunningham et al. §3), each
    gets n_top fragments where it fires and n_random uniformly drawn others, disjoint."""
    if len(fragments) < n_top + n_random:
        raise BadInputError(f"the self-test needs at least {n_top + n_random} eval fragments, "
                            f"found {len(fragments)} (or skip it: score --no-selftest)")
    rng = np.random.default_rng(seed)
    cases = []
    for feature in PLANTED:
        if len(cases) == n_features:
            break
        acts = [feature.activations(toks) for _, toks in fragments]
        firing = [i for i, a in enumerate(acts) if any(a)]
        if len(firing) < n_top:
            continue
        # Binary activations tie at the maximum, so "top" is a seeded draw among firing fragments.
        top = rng.choice(firing, size=n_top, replace=False)
        rest = np.setdiff1d(np.arange(len(fragments)), top)
        random = rng.choice(rest, size=n_random, replace=False)
        chosen = [int(i) for i in (*top, *random)]
        cases.append(PlantedCase(feature, tuple(
            Fragment(fragments[i][1], acts[i], fragments[i][0]) for i in chosen)))
    return cases


@dataclass(frozen=True)
class PlantedOutcome:
    """One planted feature's two simulations."""

    feature: str
    explanation: str
    wrong_explanation: str
    """The true explanation of another planted feature."""
    right: float | None
    """Pooled correlation with the true explanation (None: the simulation failed)."""
    wrong: float | None
    failure: str | None = None
    """Why a simulation failed; failures are reported, never scored."""


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation with no fixed point: feature i gets feature out[i]'s explanation."""
    order = np.random.default_rng(seed).permutation(n)
    out = [0] * n
    for k in range(n):  # a cyclic shift along a shuffled order never maps i to itself
        out[int(order[k])] = int(order[(k + 1) % n])
    return out
