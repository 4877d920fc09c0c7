"""What gets patched: a dictionary's features, or a split baseline read as a full rotation.

Patching needs only coefficients c(x) and decoder rows d_i: the edit is
sum_i m_i (c_cf,i - c_clean,i) d_i. A Dictionary gives c = encode(x) >= 0. A split
baseline (PCA, ICA, neurons, random: feature 2i = ReLU(+p_i), 2i+1 = ReLU(-p_i)) read as
`rotation:PATH` gives the signed projections p_i instead, so that patching all of them is
exact (the paper's "PCA as a full rotation") and each direction counts once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.dictionaries.sources import dictionary_id, load_dictionary
from autointerp.errors import BadInputError

ROTATION_PREFIX = "rotation:"


@dataclass(frozen=True)
class Basis:
    label: str
    """Shown in tables and plots, e.g. 'topk' or 'pca rotation'."""
    W_enc: torch.Tensor  # (n_features, d_model)
    b_enc: torch.Tensor  # (n_features,)
    W_dec: torch.Tensor  # (n_features, d_model)
    b_dec: torch.Tensor  # (d_model,)
    dictionary: Dictionary | None
    """The dictionary whose encode gives the coefficients; None: signed linear projections."""
    meta: dict = field(default_factory=dict)
    dictionary_id: str = ""
    path: str = ""

    @property
    def n_features(self) -> int:
        return self.W_dec.shape[0]

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d_model) -> (n, n_features)."""
        if self.dictionary is not None:
            return self.dictionary.encode(x)
        return (x.float() - self.b_dec) @ self.W_enc.T + self.b_enc


def rotation(d: Dictionary, label: str) -> Basis:
    """The signed directions of a split baseline (baselines/directions.py split_dictionary)."""
    plus, minus = d.W_enc[0::2], d.W_enc[1::2]
    if d.n_features % 2 or not torch.allclose(plus, -minus) or not torch.allclose(
            d.W_dec[0::2], -d.W_dec[1::2]) or d.b_enc.abs().max() > 0:
        raise BadInputError(f"{label}: only a split baseline (pca, ica, neurons, random) can be "
                            "read as a rotation")
    return Basis(label, plus, torch.zeros(len(plus)), d.W_dec[0::2].clone(), d.b_dec, None,
                 {**d.meta, "method": f"{d.meta.get('method', 'baseline')} rotation"})


def load_basis(spec: str) -> Basis:
    """PATH (a dictionary folder) or rotation:PATH (a split baseline as a signed rotation)."""
    is_rotation = spec.startswith(ROTATION_PREFIX)
    path = spec[len(ROTATION_PREFIX):] if is_rotation else spec
    d = load_dictionary(path)
    method = str(d.meta.get("method", Path(path).name))
    if is_rotation:
        basis = rotation(d, f"{method} rotation")
    else:
        label = method if method != "tied" else f"tied l1={_l1(d)}"
        basis = Basis(label, d.W_enc, d.b_enc, d.W_dec, d.b_dec, d, dict(d.meta))
    return Basis(basis.label, basis.W_enc, basis.b_enc, basis.W_dec, basis.b_dec, basis.dictionary,
                 basis.meta, dictionary_id(path), str(path))


def _l1(d: Dictionary):
    return (d.meta.get("hyperparameters") or {}).get("l1")
