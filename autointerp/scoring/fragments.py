"""Top and random eval fragments for a sample of a dictionary's features.

Two streaming passes over the store's eval split (memory bounded whatever the
dictionary width):

1. every feature's count of non-zero fragments, its running top `n_top`
   fragments by max activation, and a seeded uniform sample of fragments kept
   as the `n_random + 2 * n_shown` smallest random keys (random keys plus top-k
   is a streaming sample without replacement);
2. per-token activations of the chosen fragments, for the sampled features only.

As in Bills et al. (2023) and Cunningham et al. (2023, section 3), the
explainer sees `n_shown` (5) top fragments and the simulator is scored on
`n_shown` other top fragments plus `n_shown` random ones. The two top sets
interleave by rank (explainer: ranks 0, 2, 4..., scoring: 1, 3, 5...) so they
are equally strong; random fragments never repeat one of those ten.

Detection and fuzzing (scorers/detection.py, fuzzing.py) score on held-out fragments:
a second seeded sample of fragments where the feature fires (never one shown to the
explainer), binned later by activation quantile, and as many fragments where it does
not fire, each checked token by token in the second pass to have zero activation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from autointerp.harvest.store import ActivationStore
from autointerp.types import Fragment

if TYPE_CHECKING:  # imported where features are computed: a stored fragment set needs none
    import torch

RANDOM_FROM = ("nonzero", "all")
ENCODE_BUDGET = 1 << 24
"""Feature activations (floats) encoded at once; bounds memory for wide dictionaries."""


@dataclass(frozen=True)
class FragmentConfig:
    n_features: int = 150
    """Features sampled per dictionary (Cunningham et al. scored 150 per dictionary)."""
    n_top: int = 20
    """Top fragments kept per feature, by max activation."""
    n_random: int = 20
    """Random fragments kept per feature."""
    min_nonzero: int = 20
    """A feature is sampled only if it is non-zero in at least this many fragments."""
    random_from: str = "nonzero"
    """Random fragments drawn among fragments where the feature is non-zero (the papers'
    code), or among all fragments."""
    n_shown: int = 5
    """Fragments shown to the explainer; also the number of top and of random scoring fragments."""
    seed: int = 0
    n_held_out: int = 50
    """Held-out fragments where the feature fires (detection, fuzzing), none shown to the
    explainer, and as many verified zero-activation fragments (delphi scores 50 and 50)."""

    def __post_init__(self):
        if self.random_from not in RANDOM_FROM:
            raise ValueError(f"random_from must be one of {RANDOM_FROM}, got {self.random_from!r}")
        if self.n_top < 2 * self.n_shown or self.n_random < self.n_shown:
            raise ValueError("need n_top >= 2 * n_shown and n_random >= n_shown")
        if self.min_nonzero < 3 * self.n_shown:
            raise ValueError("min_nonzero must leave n_shown random fragments beside 2 * n_shown top")
        if self.n_features < 1:
            raise ValueError("n_features must be at least 1")
        if self.n_held_out < 0:
            raise ValueError("n_held_out must be at least 0")


@dataclass(frozen=True)
class FeatureFragments:
    feature: int
    n_nonzero: int
    """Eval fragments where the feature is non-zero."""
    top: tuple[Fragment, ...]
    """By max activation, strongest first."""
    random: tuple[Fragment, ...]
    held_out: tuple[Fragment, ...] = ()
    """Fragments where the feature fires, drawn at random, none shown to the explainer."""
    negatives: tuple[Fragment, ...] = ()
    """Fragments where the feature's activation is zero on every token (checked)."""

    def explainer_fragments(self, n_shown: int = 5) -> list[Fragment]:
        return list(self.top[0::2][:n_shown])

    def scoring_fragments(self, n_shown: int = 5) -> list[Fragment]:
        """n_shown top then n_shown random fragments, none shown to the explainer."""
        return list(self.top[1::2][:n_shown]) + list(self.random[:n_shown])


@dataclass(frozen=True)
class FragmentSet:
    features: tuple[FeatureFragments, ...]
    n_features: int
    """The dictionary's width."""
    n_eligible: int
    """Features with at least min_nonzero non-zero fragments."""
    n_skipped: int
    """Features left out for having too few non-zero fragments."""
    n_fragments: int
    """Eval fragments in the store."""


def _merge_topk(vals, idx, new_vals, new_idx, k):
    """Keep the k largest of (vals | new_vals) per row. vals: (F, k); new_vals: (F, n).
    A stable sort breaks ties by fragment order (kept entries precede the new chunk), so
    the result does not depend on how the eval split is chunked."""
    import torch

    v, j = torch.cat([vals, new_vals], 1).sort(dim=1, descending=True, stable=True)
    return v[:, :k], torch.cat([idx, new_idx], 1).gather(1, j[:, :k])


def random_keys(seed: int, fragment_ids: np.ndarray, n_features: int, stream: int = 0
                ) -> torch.Tensor:
    """(n, F) uniform keys, a function of (seed, fragment, feature, stream) only, so the
    sample does not depend on how the eval split is chunked. Stream 1 draws the held-out
    sample independently of the random fragments (stream 0)."""
    import torch

    rows = [np.random.default_rng([seed, int(i), *([stream] if stream else [])])
            .random(n_features, dtype=np.float32) for i in fragment_ids]
    return torch.from_numpy(np.stack(rows))


def _chunk_size(store: ActivationStore, n_features: int) -> int:
    return max(1, ENCODE_BUDGET // (store.fragment_len * n_features))


@dataclass
class _Pass1:
    counts: torch.Tensor  # (F,) non-zero fragments
    top_val: torch.Tensor  # (F, n_top) max activation
    top_idx: torch.Tensor  # (F, n_top) fragment index, -1: none
    rnd_key: torch.Tensor  # (F, K) random key, -inf: not a candidate
    rnd_idx: torch.Tensor  # (F, K)
    held_key: torch.Tensor  # (F, H) stream-1 keys over fragments where the feature fires
    held_idx: torch.Tensor
    zero_key: torch.Tensor  # (F, Z) stream-1 keys over fragments where it does not
    zero_idx: torch.Tensor


def _first_pass(dictionary, store, cfg: FragmentConfig, tick) -> _Pass1:
    import torch

    F, L = dictionary.n_features, store.fragment_len
    K = cfg.n_random + 2 * cfg.n_shown
    neg = float("-inf")

    def pool(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((F, k), neg), torch.full((F, k), -1, dtype=torch.long)

    # Held-out pools: room for the explainer's fragments to be dropped, and a margin of
    # zero candidates in case the token-level check of the second pass rejects some.
    H, Z = (cfg.n_held_out + cfg.n_shown, cfg.n_held_out + 8) if cfg.n_held_out else (0, 0)
    s = _Pass1(torch.zeros(F, dtype=torch.long), torch.full((F, cfg.n_top), neg),
               torch.full((F, cfg.n_top), -1, dtype=torch.long), *pool(K), *pool(H), *pool(Z))
    for chunk in store.eval_chunks(_chunk_size(store, F)):
        n = len(chunk.tokens)
        f = dictionary.encode(chunk.acts.reshape(n * L, -1)).float().cpu()  # (n * L, F)
        fmax = f.reshape(n, L, F).amax(1)  # (n, F)
        del f
        nonzero = fmax > 0
        s.counts += nonzero.sum(0)
        ids = torch.arange(chunk.first_fragment, chunk.first_fragment + n).expand(F, n)
        s.top_val, s.top_idx = _merge_topk(s.top_val, s.top_idx, fmax.T, ids, cfg.n_top)
        keys = random_keys(cfg.seed, ids[0].numpy(), F)  # (n, F)
        if cfg.random_from == "nonzero":
            keys[~nonzero] = neg
        s.rnd_key, s.rnd_idx = _merge_topk(s.rnd_key, s.rnd_idx, keys.T, ids, K)
        if H:
            held = random_keys(cfg.seed, ids[0].numpy(), F, stream=1)  # (n, F)
            zero = held.clone()
            held[~nonzero] = neg
            zero[nonzero] = neg
            s.held_key, s.held_idx = _merge_topk(s.held_key, s.held_idx, held.T, ids, H)
            s.zero_key, s.zero_idx = _merge_topk(s.zero_key, s.zero_idx, zero.T, ids, Z)
        tick(n)
    return s


def _pool(key: torch.Tensor, idx: torch.Tensor, feat: int) -> list[int]:
    return [int(i) for i in idx[feat][key[feat] > float("-inf")]]


def _choose(s: _Pass1, cfg: FragmentConfig) -> tuple[list[int], dict[int, tuple], int]:
    """Sampled features and, per feature, its top, random, held-out and zero-candidate
    fragment indices."""
    import torch

    eligible = torch.nonzero(s.counts >= cfg.min_nonzero).flatten().numpy()
    rng = np.random.default_rng(cfg.seed)
    n = min(cfg.n_features, len(eligible))
    sampled = sorted(int(i) for i in rng.choice(eligible, size=n, replace=False))
    chosen = {}
    for feat in sampled:
        top = [int(i) for i in s.top_idx[feat] if i >= 0]
        used = set(top[:2 * cfg.n_shown])
        valid = s.rnd_key[feat] > float("-inf")
        rnd = [int(i) for i in s.rnd_idx[feat][valid] if int(i) not in used][:cfg.n_random]
        shown = set(top[0::2][:cfg.n_shown])  # FeatureFragments.explainer_fragments
        held = [i for i in _pool(s.held_key, s.held_idx, feat) if i not in shown][:cfg.n_held_out]
        chosen[feat] = (top, rnd, held, _pool(s.zero_key, s.zero_idx, feat))
    return sampled, chosen, len(eligible)


def _second_pass(dictionary, store, chosen, tick) -> dict[tuple[int, int], np.ndarray]:
    """Per-token activations of (fragment, feature) pairs, and token ids per fragment."""
    wanted: dict[int, list[int]] = {}
    for feat, lists in chosen.items():
        for frag in set().union(*lists):
            wanted.setdefault(frag, []).append(feat)
    acts, tokens = {}, {}
    for chunk in store.eval_chunks(_chunk_size(store, dictionary.n_features)):
        n = len(chunk.tokens)
        rows = [r for r in range(n) if chunk.first_fragment + r in wanted]
        if rows:
            x = chunk.acts[rows]  # (k, L, d_model)
            f = dictionary.encode(x.reshape(-1, x.shape[-1])).float().cpu().reshape(len(rows), -1,
                                                                                    dictionary.n_features)
            for j, r in enumerate(rows):
                frag = chunk.first_fragment + r
                tokens[frag] = np.asarray(chunk.tokens[r])
                for feat in wanted[frag]:
                    acts[frag, feat] = f[j, :, feat].numpy().copy()
        tick(n)
    return acts, tokens


def collect_fragments(dictionary, store: ActivationStore, cfg: FragmentConfig = FragmentConfig(),
                      decode: Callable[[np.ndarray], list[str]] | None = None,
                      tick: Callable[[int], None] = lambda n: None) -> FragmentSet:
    """Sample features and gather their top and random fragments. `tick(n)` is called
    after every n eval fragments read (two passes: 2 * n_fragments in all)."""
    decode = decode or token_decoder(store.tokenizer())
    s = _first_pass(dictionary, store, cfg, tick)
    sampled, chosen, n_eligible = _choose(s, cfg)
    acts, tokens = _second_pass(dictionary, store, chosen, tick)
    strings = {frag: tuple(decode(ids)) for frag, ids in tokens.items()}
    values: dict[float, float] = {}  # one object per value (see fragment_set_from_json)

    def fragment(frag: int, feat: int) -> Fragment:
        return Fragment(strings[frag], tuple([values.setdefault(a, a) for a in
                                              acts[frag, feat].tolist()]), frag)

    def frags(ids) -> tuple[Fragment, ...]:
        return tuple(fragment(i, feat) for i in ids)

    features = []
    for feat in sampled:
        top, rnd, held, zero = chosen[feat]
        # The check that makes a negative a negative: zero at every token, not just a
        # zero maximum in the first pass's batch.
        checked = [i for i in zero if not np.any(acts[i, feat])][:cfg.n_held_out]
        features.append(FeatureFragments(feat, int(s.counts[feat]), frags(top), frags(rnd),
                                          frags(held), frags(checked)))
    features = tuple(features)
    return FragmentSet(features, dictionary.n_features, n_eligible,
                       dictionary.n_features - n_eligible, store.n_eval_fragments)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet: every byte as a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def token_decoder(tokenizer) -> Callable[[np.ndarray], list[str]]:
    """ids -> one display string per token. Byte-level BPE pieces ('Ġthe') are mapped back
    to their bytes; sentencepiece pieces ('▁the', '<0x0A>') to text. A piece that is only
    part of a UTF-8 character shows as U+FFFD, so every token keeps one string."""
    vocab = tokenizer.get_vocab()
    byte_level = any(p.startswith("Ġ") for p in vocab)
    sentencepiece = not byte_level and any(p.startswith("▁") for p in vocab)
    byte_of = {c: b for b, c in _bytes_to_unicode().items()}
    special = set(getattr(tokenizer, "all_special_tokens", []))
    cache: dict[int, str] = {}

    def one(i: int) -> str:
        piece = tokenizer.convert_ids_to_tokens(i)
        if piece is None:
            return tokenizer.decode([i])
        if piece in special:
            return piece
        if byte_level and all(c in byte_of for c in piece):
            return bytes(byte_of[c] for c in piece).decode("utf-8", errors="replace")
        if sentencepiece:
            if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                return bytes([int(piece[3:5], 16)]).decode("utf-8", errors="replace")
            return piece.replace("▁", " ")
        return tokenizer.decode([i])

    def decode(ids) -> list[str]:
        out = []
        for i in np.asarray(ids).tolist():
            if i not in cache:
                cache[i] = one(i)
            out.append(cache[i])
        return out

    return decode


def fragment_set_to_json(fs: FragmentSet) -> dict:
    """Exact round trip (float32 activations are exact as Python floats in JSON). Each
    fragment's tokens are written once (a fragment recurs across features), and a
    feature's activations on it as its nonzero [position, value] pairs when most are
    zero (a sparse dictionary's), else in full (a dense baseline's)."""
    tokens: dict[str, tuple[str, ...]] = {}

    def frag(f: Fragment) -> list:
        nonzero = [[i, a] for i, a in enumerate(f.activations) if a]
        row = [f.index, nonzero if 3 * len(nonzero) < len(f.activations) else list(f.activations)]
        if f.index < 0 or tokens.setdefault(str(f.index), f.tokens) != f.tokens:
            row.append(list(f.tokens))  # not a store's fragment: its tokens go with it
        return row

    return {"format": 2, "n_features": fs.n_features, "n_eligible": fs.n_eligible,
            "n_skipped": fs.n_skipped, "n_fragments": fs.n_fragments, "tokens": tokens,
            "features": [[ff.feature, ff.n_nonzero, *([frag(f) for f in part] for part in
                                                      (ff.top, ff.random, ff.held_out, ff.negatives))]
                         for ff in fs.features]}


def fragment_set_from_json(d: dict) -> FragmentSet:
    """The set written by fragment_set_to_json (or by its first format: every fragment's
    tokens and activations in full). One object per distinct token and activation value,
    shared by every fragment: a set of 600 features held ~1 GB as separate objects, and a
    process holding them spent 2.5x the CPU decoding each answer of a scoring run (3.1 ms
    against 1.2 ms; README, "Scoring at scale")."""
    strings: dict[str, str] = {}
    values: dict[float, float] = {0.0: 0.0}
    zero = values[0.0]

    def shared_tokens(toks: list) -> tuple[str, ...]:
        return tuple([strings.setdefault(t, t) for t in toks])

    def shared_values(acts: list) -> tuple[float, ...]:
        return tuple([values.setdefault(a, a) for a in acts])

    if d.get("format") == 2:
        tokens = {int(i): shared_tokens(t) for i, t in d["tokens"].items()}

        def frag(row) -> Fragment:
            index, stored, *inline = row
            toks = shared_tokens(inline[0]) if inline else tokens[index]
            if stored and not isinstance(stored[0], list):  # in full
                return Fragment(toks, shared_values(stored), index)
            acts = [zero] * len(toks)
            for i, a in stored:
                acts[i] = values.setdefault(a, a)
            return Fragment(toks, tuple(acts), index)
    else:
        def frag(row) -> Fragment:
            return Fragment(shared_tokens(row[1]), shared_values(row[2]), row[0])

    features = tuple(FeatureFragments(feat, n, *(tuple(map(frag, part)) for part in parts))
                     for feat, n, *parts in d["features"])
    return FragmentSet(features, d["n_features"], d["n_eligible"], d["n_skipped"], d["n_fragments"])
