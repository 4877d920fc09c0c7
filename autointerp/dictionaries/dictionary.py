"""One dictionary contract for every method: SAEs, baselines, and SAEs made elsewhere.

A dictionary maps activations x (n, d_model) to non-negative features f (n, n_features)
and back. Every method is stored in the same form,

    x'    = norm(x) - b_dec                         norm: none | layer_norm | constant_norm_rescale
    f     = act(x' @ W_enc.T + b_enc)               act: relu | topk | jumprelu | gated | groupmax
    x_hat = denorm(f @ W_dec + b_dec)

so scoring never needs to know which method made it. SAEs that do not subtract b_dec from
their input (sae-lens `apply_b_dec_to_input=False`, Gemma Scope, transcoders) say so with
`apply_b_dec_to_input=False`. Transcoders and skip transcoders are encode-only
(`meta["encode_only"]`): their decoder predicts another hook point, so `decode` refuses.
Ours is a folder with `config.json` + `dictionary.safetensors`; `load_dictionary` also reads
sae-lens, sparsify and Gemma Scope folders and `hf:` / `saelens:` names (dictionaries/sources.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from autointerp.dictionaries.header import (  # noqa: F401 (their home before header.py)
    CONFIG_NAME,
    FORMAT_VERSION,
    MODEL_ALIASES,
    WEIGHTS_NAME,
    canonical_model,
    check_compatible,
    declared_hook,
)
from autointerp.errors import BadInputError
from autointerp.harvest.store import atomic_write_json, publish

ACTIVATIONS = ("relu", "topk", "jumprelu", "gated", "groupmax")
INPUT_NORMS = ("none", "layer_norm", "constant_norm_rescale")
LAYER_NORM_EPS = 1e-5  # sae-lens's run-time layer_norm epsilon


class Dictionary:
    """Weights of one dictionary plus the metadata of how it was made."""

    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor,
                 b_dec: torch.Tensor, activation: str = "relu", k: int | None = None,
                 threshold: torch.Tensor | None = None, meta: dict | None = None, *,
                 b_mag: torch.Tensor | None = None, r_mag: torch.Tensor | None = None,
                 apply_b_dec_to_input: bool = True, input_norm: str = "none"):
        self.meta = dict(meta or {})
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        _check_shapes(W_enc, b_enc, W_dec, b_dec, self.apply_b_dec_to_input, self.encode_only)
        n_features = W_enc.shape[0]
        _check_activation(activation, k, n_features, threshold, b_mag, r_mag)
        if input_norm not in INPUT_NORMS:
            raise BadInputError(f"unknown dictionary input normalisation {input_norm!r}")
        self.W_enc = W_enc.float().contiguous()  # (n_features, d_model)
        self.b_enc = b_enc.float().contiguous()  # (n_features,)
        self.W_dec = W_dec.float().contiguous()  # (n_features, d_out); d_out = d_model unless encode-only
        self.b_dec = b_dec.float().contiguous()  # (d_out,)
        self.threshold = None if threshold is None else threshold.float().contiguous()
        # Gated SAE (Rajamanoharan et al. 2024): magnitude path W_enc * exp(r_mag), bias b_mag.
        self.b_mag = None if b_mag is None else b_mag.float().contiguous()
        self.r_mag = None if r_mag is None else r_mag.float().contiguous()
        self.activation = activation
        self.k = int(k) if activation in ("topk", "groupmax") else None
        self.input_norm = input_norm

    @property
    def n_features(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_model(self) -> int:
        return self.W_enc.shape[1]

    @property
    def encode_only(self) -> bool:
        """True for transcoders and skip transcoders: their decoder output is not x_hat."""
        return bool(self.meta.get("encode_only"))

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    def to(self, device: str | torch.device) -> Dictionary:
        """Move the weights (in place) and return self."""
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "b_mag", "r_mag"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.to(device))
        return self

    def _sae_in(self, x: torch.Tensor) -> torch.Tensor:
        x = _normalize(x.to(self.device, torch.float32), self.input_norm)  # (n, d_model)
        return x - self.b_dec if self.apply_b_dec_to_input else x

    @torch.no_grad()
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_enc, self._sae_in(x), self.W_enc.T)  # (n, n_features)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d_model) -> (n, n_features), every entry >= 0."""
        if self.activation == "gated":
            x_in = self._sae_in(x)
            gate = torch.addmm(self.b_enc, x_in, self.W_enc.T) > 0
            return gate * torch.addmm(self.b_mag, x_in, self._magnitude_weights().T).relu()
        pre = self.pre_acts(x)
        if self.activation == "topk":
            vals, idx = pre.topk(self.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        if self.activation == "groupmax":
            # sparsify's groupmax: the largest ReLU pre-activation of each of k equal groups.
            vals, idx = pre.relu().unflatten(-1, (self.k, -1)).max(dim=-1)
            idx = idx + torch.arange(0, self.n_features, self.n_features // self.k, device=pre.device)
            return torch.zeros_like(pre).scatter_(-1, idx, vals)
        if self.activation == "jumprelu":
            return pre * (pre > self.threshold.clamp(min=0))
        return pre.relu()

    def _magnitude_weights(self) -> torch.Tensor:
        """W_enc * exp(r_mag), made once per device: scoring encodes many batches."""
        cached = getattr(self, "_W_mag", None)
        if cached is None or cached.device != self.device:
            self._W_mag = self.W_enc * self.r_mag.exp()[:, None]  # (n_features, d_model)
        return self._W_mag

    @torch.no_grad()
    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """(n, n_features) -> (n, d_model)."""
        self._check_decodable()
        if self.input_norm != "none":
            raise BadInputError(f"dictionary normalises its input ({self.input_norm}), so its "
                                "reconstruction needs that input: use reconstruct(x)")
        return torch.addmm(self.b_dec, f.to(self.device, torch.float32), self.W_dec)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x_hat for x (n, d_model), undoing the input normalisation with x's own statistics."""
        self._check_decodable()
        x = x.to(self.device, torch.float32)
        out = torch.addmm(self.b_dec, self.encode(x), self.W_dec)
        if self.input_norm == "layer_norm":
            centred = x - x.mean(-1, keepdim=True)
            return out * centred.std(-1, keepdim=True) + x.mean(-1, keepdim=True)
        if self.input_norm == "constant_norm_rescale":
            return out * x.norm(dim=-1, keepdim=True) / self.d_model ** 0.5
        return out

    def _check_decodable(self) -> None:
        if self.encode_only:
            raise BadInputError(f"dictionary is encode-only ({self.meta.get('architecture')}): "
                                "its decoder predicts another hook point, so it has no "
                                "reconstruction of its input")

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec,
               "threshold": self.threshold, "b_mag": self.b_mag, "r_mag": self.r_mag}
        return {name: t.detach().cpu().contiguous() for name, t in out.items() if t is not None}

    def config(self) -> dict:
        extra = {}
        if self.activation in ("gated", "groupmax") or self.input_norm != "none" \
                or not self.apply_b_dec_to_input or self.encode_only:
            extra = {"input_norm": self.input_norm,
                     "apply_b_dec_to_input": self.apply_b_dec_to_input}
        return {"format": "autointerp-dictionary", "format_version": 2 if extra else 1,
                "d_model": self.d_model, "n_features": self.n_features,
                "activation": self.activation, "k": self.k, **extra, "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        """Write `path/dictionary.safetensors` then `path/config.json`, each under a
        temporary name renamed into place, so a crash never leaves a half file."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".{WEIGHTS_NAME}.tmp{os.getpid()}"
        save_file(self.tensors(), str(tmp))
        publish(tmp, path / WEIGHTS_NAME)
        atomic_write_json(path / CONFIG_NAME, self.config())
        return path


def _check_shapes(W_enc, b_enc, W_dec, b_dec, apply_b_dec_to_input: bool,
                  encode_only: bool) -> None:
    n_features, d_model = W_enc.shape
    # An encode-only dictionary's decoder writes another hook point, of any width.
    d_out = W_dec.shape[-1] if encode_only and W_dec.ndim == 2 else d_model
    ok = W_dec.shape == (n_features, d_out) and b_enc.shape == (n_features,) \
        and b_dec.shape == (d_out,) and (not apply_b_dec_to_input or d_out == d_model)
    if not ok:
        raise BadInputError(
            f"inconsistent dictionary shapes: W_enc {tuple(W_enc.shape)}, b_enc "
            f"{tuple(b_enc.shape)}, W_dec {tuple(W_dec.shape)}, b_dec {tuple(b_dec.shape)}")


def _check_activation(activation: str, k, n_features: int, threshold, b_mag, r_mag) -> None:
    if activation not in ACTIVATIONS:
        raise BadInputError(f"unknown dictionary activation {activation!r}")
    if activation == "topk" and not (k and 0 < k <= n_features):
        raise BadInputError(f"topk dictionary needs 0 < k <= {n_features}, got {k}")
    if activation == "groupmax" and not (k and 0 < k <= n_features and n_features % k == 0):
        raise BadInputError(f"groupmax dictionary needs k dividing {n_features}, got {k}")
    if activation == "jumprelu" and (threshold is None or threshold.shape != (n_features,)):
        raise BadInputError("jumprelu dictionary needs a threshold of shape (n_features,)")
    if activation == "gated" and any(t is None or t.shape != (n_features,) for t in (b_mag, r_mag)):
        raise BadInputError("gated dictionary needs b_mag and r_mag of shape (n_features,)")


def _normalize(x: torch.Tensor, how: str) -> torch.Tensor:
    """sae-lens's run-time input normalisations, both fixed functions of x alone."""
    if how == "layer_norm":
        centred = x - x.mean(-1, keepdim=True)
        return centred / (centred.std(-1, keepdim=True) + LAYER_NORM_EPS)
    if how == "constant_norm_rescale":
        return x * (x.shape[-1] ** 0.5 / x.norm(dim=-1, keepdim=True))
    return x


