"""One dictionary contract for every method: SAEs, baselines, and SAEs made elsewhere.

A dictionary maps activations x (n, d_model) to non-negative features f (n, n_features)
and back. Every method is stored in the same form,

    f     = act((x - b_dec) @ W_enc.T + b_enc)      act: relu | topk | jumprelu
    x_hat = f @ W_dec + b_dec

so scoring never needs to know which method made it. Ours is a folder with
`config.json` + `dictionary.safetensors`; `load_dictionary` also reads sae-lens
(`cfg.json` + `sae_weights.safetensors`) and EleutherAI sparsify (`cfg.json` +
`sae.safetensors`) folders.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from autointerp.errors import BadInputError
from autointerp.harvest.store import atomic_write_json, remove_stale_temp_files

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "dictionary.safetensors"
ACTIVATIONS = ("relu", "topk", "jumprelu")
# Layouts load_dictionary recognises: (config file, weights file, reader name).
LAYOUTS = (
    (CONFIG_NAME, WEIGHTS_NAME, "autointerp"),
    ("cfg.json", "sae_weights.safetensors", "saelens"),
    ("cfg.json", "sae.safetensors", "sparsify"),
)


class Dictionary:
    """Weights of one dictionary plus the metadata of how it was made."""

    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor,
                 b_dec: torch.Tensor, activation: str = "relu", k: int | None = None,
                 threshold: torch.Tensor | None = None, meta: dict | None = None):
        n_features, d_model = W_enc.shape
        if W_dec.shape != (n_features, d_model) or b_enc.shape != (n_features,) \
                or b_dec.shape != (d_model,):
            raise BadInputError(
                f"inconsistent dictionary shapes: W_enc {tuple(W_enc.shape)}, b_enc "
                f"{tuple(b_enc.shape)}, W_dec {tuple(W_dec.shape)}, b_dec {tuple(b_dec.shape)}")
        if activation not in ACTIVATIONS:
            raise BadInputError(f"unknown dictionary activation {activation!r}")
        if activation == "topk" and not (k and 0 < k <= n_features):
            raise BadInputError(f"topk dictionary needs 0 < k <= {n_features}, got {k}")
        if activation == "jumprelu" and (threshold is None or threshold.shape != (n_features,)):
            raise BadInputError("jumprelu dictionary needs a threshold of shape (n_features,)")
        self.W_enc = W_enc.float().contiguous()  # (n_features, d_model)
        self.b_enc = b_enc.float().contiguous()  # (n_features,)
        self.W_dec = W_dec.float().contiguous()  # (n_features, d_model)
        self.b_dec = b_dec.float().contiguous()  # (d_model,)
        self.threshold = None if threshold is None else threshold.float().contiguous()
        self.activation = activation
        self.k = int(k) if activation == "topk" else None
        self.meta = dict(meta or {})

    @property
    def n_features(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_model(self) -> int:
        return self.W_enc.shape[1]

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    def to(self, device: str | torch.device) -> Dictionary:
        """Move the weights (in place) and return self."""
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.to(device))
        return self

    @torch.no_grad()
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32)  # (n, d_model)
        return torch.addmm(self.b_enc, x - self.b_dec, self.W_enc.T)  # (n, n_features)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d_model) -> (n, n_features), every entry >= 0."""
        pre = self.pre_acts(x)
        if self.activation == "topk":
            vals, idx = pre.topk(self.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        if self.activation == "jumprelu":
            return pre * (pre > self.threshold.clamp(min=0))
        return pre.relu()

    @torch.no_grad()
    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """(n, n_features) -> (n, d_model)."""
        return torch.addmm(self.b_dec, f.to(self.device, torch.float32), self.W_dec)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return {name: t.detach().cpu().contiguous() for name, t in out.items()}

    def config(self) -> dict:
        return {"format": "autointerp-dictionary", "format_version": FORMAT_VERSION,
                "d_model": self.d_model, "n_features": self.n_features,
                "activation": self.activation, "k": self.k, "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        """Write `path/dictionary.safetensors` then `path/config.json`, each under a
        temporary name renamed into place, so a crash never leaves a half file."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".{WEIGHTS_NAME}.tmp{os.getpid()}"
        save_file(self.tensors(), str(tmp))
        os.replace(tmp, path / WEIGHTS_NAME)
        atomic_write_json(path / CONFIG_NAME, self.config())
        return path


def find_layout(path: str | Path) -> tuple[Path, Path, str]:
    """(config file, weights file, reader) of the dictionary folder at `path`."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise BadInputError(f"dictionary {path} does not exist")
    for config, weights, kind in LAYOUTS:
        # Our config.json alone is enough to pick our reader, which then names the
        # missing weights file; a bare cfg.json is ambiguous until its weights are seen.
        if (path / config).exists() and (kind == "autointerp" or (path / weights).exists()):
            return path / config, path / weights, kind
    raise BadInputError(f"no dictionary in {path}: expected config.json + {WEIGHTS_NAME}, or "
                        "cfg.json + sae_weights.safetensors (sae-lens) or sae.safetensors (sparsify)")


def dictionary_id(path: str | Path) -> str:
    """sha256 of the dictionary's weights file: the id used in the results database."""
    _, weights, _ = find_layout(path)
    h = hashlib.sha256()
    try:
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise BadInputError(f"cannot read dictionary weights {weights}: {e.strerror}") from None
    return h.hexdigest()


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise BadInputError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise BadInputError(f"{path} is not valid JSON: {e}") from None


def read_weights(path: Path, required: tuple[str, ...]) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise BadInputError(f"dictionary weights {path} are missing")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error type on truncation
        raise BadInputError(f"dictionary weights {path} are truncated or corrupt "
                            f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    missing = [name for name in required if name not in tensors]
    if missing:
        raise BadInputError(f"dictionary weights {path} lack tensor(s) {', '.join(missing)}")
    return tensors


def load_dictionary(path: str | Path) -> Dictionary:
    """Read an autointerp, sae-lens or sparsify dictionary folder."""
    from autointerp.dictionaries import formats

    config_path, weights_path, kind = find_layout(path)
    cfg = read_json(config_path)
    if kind == "saelens":
        return formats.from_saelens(cfg, weights_path)
    if kind == "sparsify":
        return formats.from_sparsify(cfg, weights_path)
    t = read_weights(weights_path, ("W_enc", "b_enc", "W_dec", "b_dec"))
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise BadInputError(f"{config_path} has format version {cfg['format_version']}; "
                            "upgrade autointerp to read it")
    d = Dictionary(t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"], cfg.get("activation", "relu"),
                   cfg.get("k"), t.get("threshold"), cfg.get("meta", {}))
    if (d.n_features, d.d_model) != (cfg.get("n_features"), cfg.get("d_model")):
        raise BadInputError(f"{weights_path} holds {d.n_features} x {d.d_model} weights but "
                            f"{config_path} says {cfg.get('n_features')} x {cfg.get('d_model')}")
    return d


def check_compatible(dictionary: Dictionary, store) -> None:
    """Raise BadInputError when `dictionary` was not made for the activations in `store`."""
    if dictionary.d_model != store.d_model:
        raise BadInputError(f"dictionary width {dictionary.d_model} does not match the "
                            f"activations' d_model {store.d_model}")
    meta, smeta = dictionary.meta, store.meta
    ours, theirs = meta.get("store_model_hash"), smeta.get("model_hash")
    if ours and theirs and ours != theirs:
        raise BadInputError(
            f"dictionary was fit on activations of model {meta.get('model')} (weights hash "
            f"{ours[:12]}) but {store.path} holds model {smeta.get('model')} (hash {theirs[:12]})")
    if ours and meta.get("hook") and smeta.get("hook") and meta["hook"] != smeta["hook"]:
        raise BadInputError(f"dictionary was fit at hook {meta['hook']} but {store.path} holds "
                            f"activations from hook {smeta['hook']}")


def meta_from_store(store) -> dict:
    """The provenance every dictionary fit on `store` records."""
    m = store.meta
    return {"model": m.get("model"), "hook": m.get("hook"), "layer": m.get("layer"),
            "store": str(Path(store.path).resolve()), "store_model_hash": m.get("model_hash")}


IDENTITY_KEYS = ("method", "store", "store_model_hash", "hyperparameters")
OUR_FILES = (CONFIG_NAME, WEIGHTS_NAME, "checkpoint.pt")


def prepare_out(out: str | Path, meta: dict, overwrite: bool) -> Dictionary | None:
    """Make `out` ready for a new dictionary with `meta`. Return the finished one already
    there when it was made the same way (a rerun costs nothing); with `overwrite`, delete
    our files from `out` first; otherwise refuse to replace a different dictionary.
    Temporary files a killed run left in `out` are deleted."""
    out = Path(out)
    remove_stale_temp_files(out)
    if overwrite:
        for name in OUR_FILES:
            (out / name).unlink(missing_ok=True)
        return None
    if not (out / CONFIG_NAME).exists():
        return None
    old = load_dictionary(out)
    same = all(old.meta.get(key) == meta.get(key) for key in IDENTITY_KEYS)
    if not same:
        raise BadInputError(f"{out} already holds a dictionary made with other settings; "
                            "use another --out or --overwrite")
    return old
