"""Feature circuits across layers (Cunningham et al. 2023, section 5): from a target feature,
find the features of earlier layers' dictionaries that cause it.

Edge score (exact): on the target's top activating examples, ablate feature j of the
upstream dictionary, x_l <- x_l - c_j(x_l) d_j at every position, and measure the relative
drop of the downstream node's activation (summed over the examples' positions). The
attribution mode estimates every upstream feature's drop from one backward pass, and the
drops of the edges it keeps are then measured exactly beside it, so each run validates it.
Each node keeps its top_k causes above `threshold` and those are expanded in turn.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import torch

from autointerp.causal import forward
from autointerp.causal.basis import Basis
from autointerp.errors import BadInputError
from autointerp.harvest.hooks import Hook
from autointerp.harvest.models import LoadedModel

MODES = ("exact", "attribution")


@dataclass(frozen=True)
class Site:
    """One dictionary at one hook point."""

    hook: Hook
    basis: Basis


@dataclass(frozen=True)
class Node:
    site: int
    """Index into the sites, ordered by layer."""
    feature: int
    activation: float
    """The feature's activation summed over the examples' positions (clean run)."""


@dataclass(frozen=True)
class Edge:
    source: int
    """Node index (upstream)."""
    target: int
    drop: float
    """Relative drop of the target's activation when the source is ablated (the mode's)."""
    exact_drop: float
    cosine: float
    """Cosine of the two features' decoder directions."""


@dataclass(frozen=True)
class Circuit:
    nodes: list[Node]
    edges: list[Edge]
    n_forward: int
    checked: list[tuple[float, float]]
    """(attribution, exact) drop of every candidate that attribution mode checked exactly."""


def top_examples(store, basis: Basis, feature: int, n: int = 20,
                 context: int = 32) -> list[np.ndarray]:
    """Token windows ending at the feature's n highest activations in the store's eval
    fragments (at most one per fragment), each `context` tokens long at most."""
    if not 0 <= feature < basis.n_features:
        raise BadInputError(f"feature {feature} is out of range: {basis.label} has {basis.n_features}")
    best: list[tuple[float, int, int]] = []
    windows: dict[int, np.ndarray] = {}
    for chunk in store.eval_chunks():
        acts = basis.coefficients(chunk.acts.reshape(-1, chunk.acts.shape[-1]))[:, feature]
        acts = acts.reshape(chunk.tokens.shape)  # (n_fragments, fragment_len)
        value, pos = acts.max(1)
        for i in range(len(value)):
            item = (float(value[i]), chunk.first_fragment + i, int(pos[i]))
            if item[0] > 0 and (len(best) < n or item > best[0]):
                heapq.heappush(best, item) if len(best) < n else heapq.heapreplace(best, item)
                windows[item[1]] = chunk.tokens[i, max(0, item[2] + 1 - context):item[2] + 1]
    if not best:
        raise BadInputError(f"feature {feature} of {basis.label} never fires on {store.path}")
    return [windows[f] for _, f, _ in sorted(best, reverse=True)]


def pad(windows: list[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(w) for w in windows)
    ids = torch.full((len(windows), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(windows), T, dtype=torch.long)
    for i, w in enumerate(windows):
        ids[i, :len(w)] = torch.as_tensor(w.astype(np.int64))
        mask[i, :len(w)] = 1
    return ids, mask


class Tracer:
    """Ablations on a fixed set of example windows; counts forward passes."""

    def __init__(self, loaded: LoadedModel, sites: list[Site], ids: torch.Tensor,
                 mask: torch.Tensor, max_batch: int = 64):
        self.loaded, self.sites, self.ids, self.mask = loaded, sites, ids, mask
        self.real = mask.bool().to(loaded.device)
        self.max_batch, self.n_forward = max_batch, 0
        self.clean = [self._coef(s, forward.run(loaded, ids, mask, read=s.hook)) for s in sites]
        self.n_forward += len(sites)

    def _coef(self, site: Site, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq, d_model) -> (batch, seq, n_features), zero on padding."""
        c = site.basis.coefficients(x.reshape(-1, x.shape[-1]).float())
        return c.reshape(*x.shape[:2], -1) * self.real.repeat(x.shape[0] // len(self.ids), 1)[..., None]

    def activation(self, node_site: int, feature: int) -> float:
        return float(self.clean[node_site][..., feature].sum())

    def candidates(self, site: int) -> torch.Tensor:
        """Features of `site` active somewhere in the examples: only they can be ablated."""
        return (self.clean[site].amax((0, 1)) > 0).nonzero().squeeze(1)

    def exact_drops(self, node: Node, up: int, features: torch.Tensor) -> torch.Tensor:
        """Relative drop of the node's activation when each upstream feature is ablated."""
        E = len(self.ids)
        per_pass = max(1, self.max_batch // E)
        site, W = self.sites[up], self.sites[up].basis.W_dec.to(self.loaded.device)
        drops = []
        for s in range(0, len(features), per_pass):
            group = features[s:s + per_pass]
            c = self.clean[up][..., group].permute(2, 0, 1).reshape(-1, self.ids.shape[1], 1)
            d = W[group].repeat_interleave(E, 0)[:, None, :]  # (len(group) * E, 1, d_model)
            edits = {site.hook: lambda x, c=c, d=d: x - (c * d).to(x.dtype)}
            x = forward.run(self.loaded, self.ids.repeat(len(group), 1), self.mask.repeat(len(group), 1),
                            edits, read=self.sites[node.site].hook)
            self.n_forward += 1
            a = self._coef(self.sites[node.site], x)[..., node.feature].reshape(len(group), -1).sum(1)
            drops.append(1 - a / node.activation)
        return torch.cat(drops).cpu()

    def attribution_drops(self, node: Node, up: int, features: torch.Tensor) -> torch.Tensor:
        """First-order estimate of exact_drops: grad of the node's activation w.r.t. the
        upstream activation, dotted with each ablated component c_j d_j."""
        site = self.sites[up]
        box = []

        def keep(x):
            x = x.detach().requires_grad_(True)
            box.append(x)
            return x

        x = forward.run(self.loaded, self.ids, self.mask, {site.hook: keep},
                        read=self.sites[node.site].hook, grad=True)
        self.n_forward += 1
        a = self._coef_grad(self.sites[node.site], x)[..., node.feature].sum()
        (g,) = torch.autograd.grad(a, box[0])  # (E, T, d_model)
        W = site.basis.W_dec[features].to(g.device)  # (n, d_model)
        proj = torch.einsum("etd,nd->etn", g.float(), W)
        c = self.clean[up][..., features]
        return ((proj * c).sum((0, 1)) / node.activation).detach().cpu()

    def _coef_grad(self, site: Site, x: torch.Tensor) -> torch.Tensor:
        """Coefficients with gradients: the encoder written out, TopK's choice held fixed."""
        b = site.basis
        dev = x.device
        pre = (x.float() - b.b_dec.to(dev)) @ b.W_enc.T.to(dev) + b.b_enc.to(dev)
        d = b.dictionary
        if d is None:
            f = pre
        elif d.activation == "topk":
            chosen = torch.zeros_like(pre).scatter_(-1, pre.detach().topk(d.k, dim=-1).indices, 1.0)
            f = pre.relu() * chosen
        elif d.activation == "jumprelu":
            f = pre * (pre > d.threshold.to(dev).clamp(min=0))
        else:
            f = pre.relu()
        return f * self.real[..., None]


def trace(tracer: Tracer, target_site: int, feature: int, mode: str = "exact", top_k: int = 3,
          threshold: float = 0.01, tick=None) -> Circuit:
    """Expand from the target: each node's top_k upstream causes (in the next earlier site)
    whose drop is at least `threshold`, until the earliest site."""
    if mode not in MODES:
        raise BadInputError(f"unknown --mode {mode!r}: use {' or '.join(MODES)}")
    root = Node(target_site, feature, tracer.activation(target_site, feature))
    if root.activation <= 0:
        raise BadInputError(f"the target feature {feature} does not fire on its examples")
    nodes, edges, checked = [root], [], []
    index = {(target_site, feature): 0}
    frontier = [0]
    while frontier:
        n = frontier.pop(0)
        node = nodes[n]
        up = node.site - 1
        if up < 0:
            continue
        cands = tracer.candidates(up)
        if len(cands) == 0:
            continue
        if mode == "exact":
            scores = tracer.exact_drops(node, up, cands)
        else:
            scores = tracer.attribution_drops(node, up, cands)
        best = scores.argsort(descending=True)[:top_k]
        exact = scores[best] if mode == "exact" else tracer.exact_drops(node, up, cands[best])
        if mode == "attribution":
            checked += list(zip(scores[best].tolist(), exact.tolist(), strict=True))
        for b, ex in zip(best.tolist(), exact.tolist(), strict=True):
            if float(scores[b]) < threshold or ex < threshold:
                continue
            j = int(cands[b])
            key = (up, j)
            if key not in index:
                index[key] = len(nodes)
                nodes.append(Node(up, j, tracer.activation(up, j)))
                frontier.append(index[key])
            edges.append(Edge(index[key], n, float(scores[b]), float(ex),
                              _cosine(tracer.sites[up].basis, j, tracer.sites[node.site].basis,
                                      node.feature)))
        if tick:
            tick()
    return Circuit(nodes, edges, tracer.n_forward, checked)


def _cosine(a: Basis, i: int, b: Basis, j: int) -> float:
    return float(torch.nn.functional.cosine_similarity(a.W_dec[i], b.W_dec[j], dim=0))
