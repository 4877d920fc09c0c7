"""How well a dictionary reconstructs held-out activations, and what that costs the model.

Reconstruction metrics run on the activation store's eval fragments (never trained on).
Loss recovered (Bricken et al. 2023; Cunningham et al. 2023, sec. 4) replaces the hook
point's activation in a real forward pass:

    loss_recovered = (CE_zero_ablation - CE_reconstructed) / (CE_zero_ablation - CE_clean)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from autointerp.dictionaries.dictionary import Dictionary, check_compatible
from autointerp.errors import BadInputError

DENSE_THRESHOLD = 0.1
"""A feature is dense when it fires on more than 10% of eval tokens: too common to be one
interpretable concept, and the usual dense-latent cut in the SAE literature."""


@dataclass(frozen=True)
class DictMetrics:
    n_tokens: int
    """Eval tokens the metrics were measured on."""
    fvu: float | None
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean||^2; None (n/a)
    for encode-only dictionaries (transcoders), which do not reconstruct their input."""
    mse: float | None
    """Mean squared error per dimension, in the activations' units; None when fvu is."""
    l0: float
    """Mean number of non-zero features per token."""
    dead_fraction: float
    """Share of features that never fire on the eval tokens."""
    dense_fraction: float
    """Share of features that fire on more than DENSE_THRESHOLD of eval tokens."""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LossRecovered:
    n_tokens: int
    """Next-token predictions the cross-entropies average over."""
    ce_clean: float
    ce_zero_ablation: float
    ce_reconstructed: float
    loss_recovered: float
    """1 when the reconstruction costs nothing, 0 when it is as bad as zeroing the layer."""

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate(dictionary: Dictionary, store, max_tokens: int = 65_536, batch: int = 4096) -> DictMetrics:
    """Reconstruction metrics on up to `max_tokens` eval activations of `store`."""
    check_compatible(dictionary, store)
    n, sse = 0, 0.0
    sum_x = torch.zeros(dictionary.d_model, dtype=torch.float64)
    sum_x2 = 0.0
    l0_sum = 0.0
    fires = torch.zeros(dictionary.n_features, dtype=torch.float64)
    for chunk in store.eval_chunks():
        acts = chunk.acts.reshape(-1, dictionary.d_model)[: max_tokens - n]
        for x in acts.split(batch):
            f = dictionary.encode(x)
            x = x.to(f.device)
            if not dictionary.encode_only:
                sse += float((dictionary.reconstruct(x) - x).double().pow(2).sum())
            sum_x += x.double().sum(0).cpu()
            sum_x2 += float(x.double().pow(2).sum())
            on = f > 0
            l0_sum += float(on.sum())
            fires += on.sum(0).double().cpu()
            n += len(x)
        if n >= max_tokens:
            break
    if n == 0:
        raise BadInputError(f"activation store {store.path} has no eval fragments to evaluate on")
    total_var = sum_x2 - float(sum_x.pow(2).sum()) / n
    fvu = sse / total_var if total_var > 0 else math.nan
    return DictMetrics(
        n_tokens=n, fvu=None if dictionary.encode_only else fvu,
        mse=None if dictionary.encode_only else sse / (n * dictionary.d_model), l0=l0_sum / n,
        dead_fraction=float((fires == 0).double().mean()),
        dense_fraction=float((fires / n > DENSE_THRESHOLD).double().mean()))


def _next_token_ce(logits: torch.Tensor, input_ids: torch.Tensor, start: int) -> tuple[float, int]:
    """Summed cross-entropy of the predictions made at positions start.. and their count."""
    logp = logits[:, start:-1].float().log_softmax(-1)
    target = input_ids[:, start + 1:].to(logp.device)
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return float(nll.sum()), nll.numel()


def loss_recovered(dictionary: Dictionary, store, loaded, n_fragments: int = 32,
                   batch: int = 8) -> LossRecovered:
    """Next-token CE on the first `n_fragments` eval fragments, clean, with the hook point
    zeroed and with it replaced by the dictionary's reconstruction. The BOS position
    (prepended as in the harvest, never in the store) keeps its clean activation: the
    dictionary was not trained on it."""
    from autointerp.harvest.models import forward_with_replacement, parse_hook

    check_compatible(dictionary, store)
    if dictionary.encode_only:
        raise BadInputError("loss recovered is n/a for an encode-only dictionary (transcoder): "
                            "it does not reconstruct the activations it reads")
    hook = parse_hook(store.meta["hook"], loaded.n_layers, loaded.name)
    dictionary.to(loaded.device)
    n_fragments = min(n_fragments, store.n_eval_fragments)
    if n_fragments == 0:
        raise BadInputError(f"activation store {store.path} has no eval fragments")
    ids, start = _eval_input_ids(store, n_fragments)

    def zero(h: torch.Tensor) -> torch.Tensor:
        out = h.clone()
        out[:, start:] = 0
        return out

    def reconstruct(h: torch.Tensor) -> torch.Tensor:
        out = h.clone()
        body = h[:, start:].reshape(-1, h.shape[-1]).float()
        out[:, start:] = dictionary.reconstruct(body).reshape(h[:, start:].shape).to(h.dtype)
        return out

    totals = {"clean": 0.0, "zero": 0.0, "recon": 0.0}
    count = 0
    for ids_b in ids.split(batch):
        for name, fn in (("clean", lambda h: h), ("zero", zero), ("recon", reconstruct)):
            logits = forward_with_replacement(loaded, hook, ids_b, None, fn,
                                              store.meta.get("input_transform"))
            ce, k = _next_token_ce(logits, ids_b, start)
            totals[name] += ce
        count += k
    clean, zeroed, recon = (totals[k] / count for k in ("clean", "zero", "recon"))
    frac = (zeroed - recon) / (zeroed - clean) if zeroed != clean else math.nan
    return LossRecovered(count, clean, zeroed, recon, frac)


def load_store_model(store, device: str = "auto"):
    """The model (and weights) the store was harvested from, checked by weights hash."""
    from autointerp.harvest.models import load_causal_lm

    args = store.meta.get("args") or {}
    loaded = load_causal_lm(store.meta["model"], device, store.meta.get("dtype", "auto"),
                            random_init_seed=args.get("random_init"))
    expected = store.meta.get("model_hash")
    if expected and loaded.weights_hash != expected:
        raise BadInputError(f"model {store.meta['model']} now has weights hash "
                            f"{loaded.weights_hash[:12]}, but {store.path} was harvested from "
                            f"{expected[:12]}; loss recovered would compare different models")
    return loaded


def _eval_input_ids(store, n_fragments: int) -> tuple[torch.Tensor, int]:
    """(n_fragments, fragment_len [+ 1]) token ids of the store's eval fragments, with the
    BOS the harvest prepended, and the index of the first stored position."""
    rows = [np.asarray(store.eval_fragment_tokens(i), dtype=np.int64) for i in range(n_fragments)]
    ids = torch.from_numpy(np.stack(rows))
    if store.meta.get("prepend_bos", True) and store.meta.get("bos_token_id") is not None:
        bos = torch.full((len(ids), 1), int(store.meta["bos_token_id"]), dtype=torch.long)
        return torch.cat([bos, ids], dim=1), 1
    return ids, 0
