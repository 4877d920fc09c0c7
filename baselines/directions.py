"""The classic baselines as dictionaries: PCA, ICA, the neuron basis, random directions.

Every direction becomes two features, ReLU(+proj) and ReLU(-proj) (Cunningham et al.
2023 kept only the positive tail of ICA components in their released code, throwing
away components whose stronger tail is negative; splitting keeps both tails).
All are centred at the training mean, so the split separates the two tails of a
direction rather than the sign of a constant offset.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.errors import BadInputError

METHODS = ("pca", "ica", "neurons", "random")


def split_dictionary(encoder: torch.Tensor, decoder: torch.Tensor, mean: torch.Tensor,
                     meta: dict) -> Dictionary:
    """Directions (m, d) -> a 2m-feature dictionary: feature 2i is ReLU(+proj_i) and
    2i+1 is ReLU(-proj_i), so f[2i] - f[2i+1] recovers proj_i and decode is exact."""
    m, d = encoder.shape
    W_enc = torch.stack([encoder, -encoder], dim=1).reshape(2 * m, d)
    W_dec = torch.stack([decoder, -decoder], dim=1).reshape(2 * m, d)
    return Dictionary(W_enc, torch.zeros(2 * m), W_dec, mean, "relu", meta=meta)


def pca_directions(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(components (d, d) orthonormal rows by decreasing variance, their variances, mean).

    Eigendecomposition of the float64 covariance: the same subspace as the SVD of the
    centred data at a fraction of the memory. Signs follow sklearn's svd_flip convention
    (the largest-magnitude entry of each component is positive) so fits are reproducible."""
    x64 = x.double()
    mean = x64.mean(0)
    centred = x64 - mean
    cov = centred.T @ centred / max(len(x) - 1, 1)
    variances, vecs = torch.linalg.eigh(cov)
    order = variances.argsort(descending=True)
    comps = vecs[:, order].T  # (d, d)
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    return comps * signs, variances[order].clamp(min=0), mean


def fit_pca(x: torch.Tensor, meta: dict) -> Dictionary:
    comps, variances, mean = pca_directions(x)
    meta = {**meta, "explained_variance": variances.tolist()}
    return split_dictionary(comps.float(), comps.float(), mean.float(), meta)


def fit_ica(x: torch.Tensor, seed: int, meta: dict) -> Dictionary:
    """FastICA with as many components as dimensions; decode uses the mixing matrix."""
    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    ica = FastICA(n_components=x.shape[1], whiten="unit-variance", random_state=seed,
                  max_iter=400, tol=1e-4)
    with warnings.catch_warnings():  # recorded in the metadata instead of printed mid-CLI
        warnings.simplefilter("ignore", ConvergenceWarning)
        ica.fit(x.double().numpy())
    unmixing = torch.from_numpy(ica.components_).float()  # (m, d): s = (x - mean) @ W.T
    mixing = torch.from_numpy(np.ascontiguousarray(ica.mixing_.T)).float()  # (m, d)
    meta = {**meta, "ica_iterations": int(ica.n_iter_), "ica_converged": ica.n_iter_ < ica.max_iter}
    return split_dictionary(unmixing, mixing, torch.from_numpy(ica.mean_).float(), meta)


def fit_neurons(x: torch.Tensor, meta: dict) -> Dictionary:
    d = x.shape[1]
    return split_dictionary(torch.eye(d), torch.eye(d), x.double().mean(0).float(), meta)


def fit_random(x: torch.Tensor, seed: int, meta: dict) -> Dictionary:
    """d_model random unit directions; the pseudo-inverse decodes, so the basis is complete."""
    d = x.shape[1]
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(d, d, generator=gen, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    decoder = torch.linalg.pinv(dirs).T  # (d, d): x - mean == proj @ decoder
    return split_dictionary(dirs.float(), decoder.float(), x.double().mean(0).float(), meta)


def fit_baseline(method: str, x: torch.Tensor, seed: int = 0, meta: dict | None = None) -> Dictionary:
    """Fit one baseline on (n, d_model) activations."""
    if method not in METHODS:
        raise BadInputError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if x.ndim != 2 or len(x) < 2:
        raise BadInputError(f"need at least two activation vectors to fit {method}, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise BadInputError(f"activations given to {method} contain NaN or inf")
    meta = {**(meta or {}), "method": method,
            "hyperparameters": {"seed": seed, "n_fit": len(x)}}
    if method == "pca":
        return fit_pca(x, meta)
    if method == "ica":
        return fit_ica(x, seed, meta)
    if method == "neurons":
        return fit_neurons(x, meta)
    return fit_random(x, seed, meta)


def fit_from_store(store, out, method: str, seed: int = 0, n_fit: int = 100_000,
                   overwrite: bool = False) -> tuple[Dictionary, bool]:
    """(dictionary, reused): fit `method` on a uniform sample of the store's training
    activations, evaluate it on the eval part and save it to `out`."""
    from autointerp.dictionaries.outputs import meta_from_store, prepare_out
    from autointerp.sae.run import save_evaluated

    if method not in METHODS:
        raise BadInputError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if n_fit < 2:
        raise BadInputError(f"--n-fit must be at least 2, got {n_fit}")
    meta = {**meta_from_store(store), "method": method,
            "hyperparameters": {"seed": seed, "n_fit": n_fit}}
    done = prepare_out(out, meta, overwrite)
    if done is not None:
        return done, True
    x = store.train_sample(n_fit, seed=seed)
    dictionary = fit_baseline(method, x, seed, meta_from_store(store))
    dictionary.meta["hyperparameters"]["n_fit"] = n_fit  # what was asked, for reruns to match
    dictionary.meta["n_fit_used"] = len(x)
    return save_evaluated(dictionary, store, out), False
