"""Shared-prefix key/value caches for the in-process backend.

The explainer's and the simulator's prompts begin with the same long instructions and
few-shot examples; only the last part (the feature's records) differs, and one feature's
simulator prompts share its explanation too. Requests of a batch are grouped by their
longest common token prefix (one group per feature rather than one for all); the prefix
is run through the model once, its keys/values and final hidden states are kept (a few,
least recently used dropped first) and every later group that starts with it runs only
its suffix.
Prompt logprobs over the prefix do not depend on what follows, so their read-out is
kept too, per read-out setting.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

MIN_PREFIX_TOKENS = 32
"""Shorter shared prefixes are not worth a separate forward pass and a cache slot."""
SLOTS = 4
"""Prefixes kept (SmolLM2-135M: about 46 kB of keys/values per token in float32)."""
SPLIT_GAP = 8
"""A kept prefix serves a group whose common prefix it is at most this many tokens shorter
than; otherwise the group's own longer prefix is computed (extending the kept one) and
kept. Rows of a batch likewise form a new group where joining the current one would
shorten its shared prefix by this much or more: one feature's ten simulator prompts
share its explanation, which another feature's do not."""


@dataclass
class Prefix:
    ids: tuple[int, ...]
    cache: object
    """The model's key/value cache after `ids` (batch 1); copied, never extended in place."""
    hidden: torch.Tensor
    """(len(ids), d_model) final hidden states: the last one predicts the first suffix token."""
    read_outs: dict = field(default_factory=dict)
    """(top-k, candidate ids) -> prompt-token logprobs over the prefix."""

    def batch_cache(self, batch: int):
        """A fresh cache holding the prefix `batch` times, for a forward pass to extend."""
        cache = copy.deepcopy(self.cache)
        if batch > 1:
            cache.batch_repeat_interleave(batch)
        return cache

    def read_out(self, key, compute: Callable[[], list]) -> list:
        if key not in self.read_outs:
            self.read_outs[key] = compute()
        return self.read_outs[key]


def common_prefix(rows: list[list[int]]) -> int:
    """Length of the longest prefix all rows share."""
    first, n = rows[0], min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != first[i] for r in rows[1:]):
            return i
    return n


def group_by_prefix(ids: list[list[int]]) -> list[tuple[list[int], int]]:
    """Row indices grouped so that each group shares a prefix of MIN_PREFIX_TOKENS or more,
    with that prefix's length (0 for a group without one); a row that would shorten its
    group's prefix by SPLIT_GAP tokens or more starts a new group. Each row keeps at least
    its last token outside the prefix: its hidden state starts the generation."""
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    groups: list[tuple[list[int], int]] = []
    for i in order:
        if groups:
            members, shared = groups[-1]
            n = common_prefix([ids[j] for j in members] + [ids[i]])
            n = min(n, *(len(ids[j]) - 1 for j in members + [i]))
            if n >= MIN_PREFIX_TOKENS and (len(members) == 1 or n > shared - SPLIT_GAP):
                groups[-1] = (members + [i], n)
                continue
        groups.append(([i], 0))
    return groups


class PrefixCache:
    """The kept prefixes, most recently used last."""

    def __init__(self, slots: int = SLOTS):
        self.slots = slots
        self._kept: OrderedDict[tuple[int, ...], Prefix] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.extended = 0
        """Misses served by extending a kept prefix's shared start."""

    def find(self, row: list[int], length: int, gap: int | None = SPLIT_GAP) -> Prefix | None:
        """The longest kept prefix of row[:length] that is less than `gap` tokens shorter
        (a lone request, which has no longer prefix to share, takes any: gap None)."""
        best = None
        for ids, prefix in self._kept.items():
            n = len(ids)
            if n <= length and tuple(row[:n]) == ids and (best is None or n > len(best.ids)):
                best = prefix
        if best is None or gap is not None and len(best.ids) <= length - gap:
            return None
        self._kept.move_to_end(best.ids)
        self.hits += 1
        return best

    def shared_start(self, ids: tuple[int, ...]) -> tuple[Prefix, int] | None:
        """The kept prefix that begins like `ids` for longest (MIN_PREFIX_TOKENS at least),
        and for how many tokens: one feature's simulator prompts share the instructions
        and examples with another's, but not the explanation that follows them."""
        best = None
        for kept in self._kept.values():
            n = common_prefix([list(kept.ids), list(ids)])
            if n >= MIN_PREFIX_TOKENS and (best is None or n > best[1]):
                best = (kept, n)
        return best

    def get(self, row: list[int], length: int,
            compute: Callable[[list[int]], tuple[object, torch.Tensor]],
            extend: Callable[[Prefix, int, list[int]], tuple[object, torch.Tensor]]) -> Prefix:
        """The prefix to use for a group whose rows share row[:length]. When no kept one
        serves, it is computed and kept: `extend(kept, n, ids)` runs only what follows
        the first n tokens a kept prefix shares with it, `compute(ids)` all of it."""
        found = self.find(row, length)
        if found is not None:
            return found
        self.misses += 1
        ids = tuple(row[:length])
        start = self.shared_start(ids)
        if start is not None:
            self.extended += 1
            cache, hidden = extend(*start, list(ids))
        else:
            cache, hidden = compute(list(ids))
        self._kept[ids] = Prefix(ids, cache, hidden)
        while len(self._kept) > self.slots:
            self._kept.popitem(last=False)
        return self._kept[ids]
