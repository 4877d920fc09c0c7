"""The on-disk activation store: sharded, memory-mapped, crash-safe.

Layout of a store folder:

    metadata.json            model, weights hash, hook point, dtype, corpus, seed, counts, version
    tokenizer/               the subject model's tokenizer (so scoring never reloads the model)
    train/00000.acts.npy     (n_tokens, d_model) fp16, or bf16 stored as uint16
    train/00000.tokens.npy   (n_tokens,) int32 token ids
    train/00000.json         written last: the shard is complete only when this exists
    eval/00000.acts.npy      (n_fragments * fragment_len, d_model)
    eval/00000.tokens.npy    (n_fragments * fragment_len,)
    eval/00000.offsets.npy   (n_fragments + 1,) fragment boundaries inside the shard
    eval/00000.json

A harvest by N > 1 processes (torchrun) writes each rank's shards under split/rankRRR/ and
names each shard's file in its metadata.json entry ("stem", with the "rank" that wrote it);
the shard list, rank 0's shards first, is the read order.

Every file is written under a temporary name and renamed into place, so a
killed harvest never leaves a file that a later run would read as whole.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autointerp.errors import BadInputError

if TYPE_CHECKING:  # imported where tensors are made: reading metadata needs no torch
    import torch

SPLITS = ("train", "eval")
STORE_DTYPES = ("float16", "bfloat16")
TEMP_NAME = re.compile(r"^\..+\.tmp(\d+)$")
"""`.NAME.tmpPID`: a file being written by process PID, renamed into place when whole."""


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def publish(tmp: Path, path: Path) -> None:
    """Rename a finished temporary file into place with the permissions the user's umask
    gives a new file (a library may write its file 0600: colleagues sharing a folder
    could read the config but not the weights)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    publish(tmp, path)


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process there: assume it is alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in `folder` (not below it): those
    named `.NAME.tmpPID` whose process is gone. No loader reads them, but for a real model
    a shard is tens of MB. A live process's files (a concurrent run's) are kept."""
    removed = []
    for path in sorted(Path(folder).glob(".*.tmp*")) if Path(folder).is_dir() else []:
        m = TEMP_NAME.match(path.name)
        if m and path.is_file() and not _pid_alive(int(m.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    publish(tmp, path)


def to_storage(acts: torch.Tensor, dtype: str) -> np.ndarray:
    """(n, d) float tensor -> numpy array in the store's dtype (bf16 kept as raw uint16)."""
    import torch

    if dtype == "float16":
        out = acts.to(torch.float16)
        if not torch.isfinite(out).all() and torch.isfinite(acts).all():
            raise BadInputError("activations overflow float16; harvest again with --store-dtype bfloat16")
        return out.cpu().numpy()
    return acts.to(torch.bfloat16).cpu().view(torch.uint16).numpy()


def from_storage(array: np.ndarray, dtype: str) -> torch.Tensor:
    """Stored numpy rows -> float32 tensor."""
    import torch

    t = torch.from_numpy(np.array(array))  # a copy: memory-mapped shards are read-only
    if dtype == "bfloat16":
        t = t.view(torch.bfloat16)
    return t.float()


def write_shard(
    directory: Path, index: int, dtype: str, acts: torch.Tensor, tokens: np.ndarray,
    offsets: np.ndarray | None = None, extra: dict | None = None,
) -> dict:
    """Write one shard (data files first, the .json completion marker last)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{index:05d}"
    arrays = {"acts": to_storage(acts, dtype), "tokens": tokens.astype(np.int32)}
    if offsets is not None:
        arrays["offsets"] = offsets.astype(np.int64)
    sizes = {}
    for name, arr in arrays.items():
        path = directory / f"{stem}.{name}.npy"
        _atomic_save_npy(path, arr)
        sizes[name] = path.stat().st_size
    info = {"n_tokens": int(len(tokens)), "bytes": sizes, **(extra or {})}
    if offsets is not None:
        info["n_fragments"] = int(len(offsets) - 1)
    atomic_write_json(directory / f"{stem}.json", info)
    return info


def completed_shards(directory: Path) -> list[dict]:
    """Info dicts of the complete shards, in order, stopping at the first gap."""
    out = []
    while (directory / f"{len(out):05d}.json").exists():
        out.append(json.loads((directory / f"{len(out):05d}.json").read_text()))
    return out


@dataclass(frozen=True)
class EvalChunk:
    """A run of whole eval fragments, in store order."""

    first_fragment: int  # global index of the first fragment in this chunk
    tokens: np.ndarray  # (n_fragments, fragment_len) int32
    acts: torch.Tensor  # (n_fragments, fragment_len, d_model) float32


class ActivationStore:
    """Reads a finished store: shuffled training batches and eval fragments."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "metadata.json"
        if not meta_path.exists():
            raise BadInputError(f"{self.path} is not an activation store (no metadata.json)")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise BadInputError(f"{meta_path} is corrupt: {e}") from None
        if self.meta.get("status") != "complete":
            raise BadInputError(f"activation store {self.path} is incomplete; rerun the harvest to finish it")
        self.dtype = self.meta["store_dtype"]
        self.d_model = int(self.meta["d_model"])
        self.fragment_len = int(self.meta["fragment_len"])
        self._shards = {s: self._open_split(s) for s in SPLITS}
        self.n_train_tokens = sum(len(t) for _, t, _ in self._shards["train"])
        self.n_eval_fragments = sum(len(o) - 1 for _, _, o in self._shards["eval"])

    def _open_split(self, split: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        infos = self.meta.get("shards", {}).get(split)
        if infos is None:
            raise BadInputError(f"activation store {self.path} has no {split} shard list")
        shards = []
        for i, info in enumerate(infos):
            # Shards of a multi-rank harvest name their file (split/rankRRR/NNNNN); the list's
            # order, rank after rank, is the single-process order of the sequences.
            stem = self.path / split / info.get("stem", f"{i:05d}")
            try:
                for name, size in info["bytes"].items():
                    actual = Path(f"{stem}.{name}.npy").stat().st_size
                    if actual != size:
                        raise BadInputError(
                            f"activation store shard {stem}.{name}.npy is truncated "
                            f"({actual} of {size} bytes); rerun the harvest with --overwrite")
                acts = np.load(f"{stem}.acts.npy", mmap_mode="r")
                tokens = np.load(f"{stem}.tokens.npy", mmap_mode="r")
                offsets = np.load(f"{stem}.offsets.npy") if split == "eval" else None
            except (OSError, ValueError) as e:
                raise BadInputError(f"activation store shard {stem} is missing or unreadable: {e}") from None
            if acts.shape != (len(tokens), self.d_model):
                raise BadInputError(f"activation store shard {stem} has shape {acts.shape}, "
                                    f"expected ({len(tokens)}, {self.d_model})")
            shards.append((acts, tokens, offsets))
        return shards

    def _checked(self, rows: np.ndarray, where: str) -> torch.Tensor:
        import torch

        x = from_storage(rows, self.dtype)
        if not torch.isfinite(x).all():
            raise BadInputError(f"activation store {self.path} has NaN or inf activations ({where})")
        return x

    def train_batches(self, batch_size: int, n_tokens: int | None = None, seed: int = 0,
                      shards_in_buffer: int = 4) -> Iterator[torch.Tensor]:
        """Yield float32 (batch_size, d_model) batches, shuffled across a buffer of
        several shards, looping over epochs until `n_tokens` have been yielded
        (default: one epoch). Memory holds at most `shards_in_buffer` shards."""
        import torch

        rng = np.random.default_rng(seed)
        shards = self._shards["train"]
        if not shards or self.n_train_tokens == 0:
            raise BadInputError(f"activation store {self.path} has no training tokens")
        total = self.n_train_tokens if n_tokens is None else n_tokens
        done, epoch = 0, 0
        leftover = torch.empty(0, self.d_model)
        while done < total:
            order = rng.permutation(len(shards))
            for start in range(0, len(order), shards_in_buffer):
                group = order[start:start + shards_in_buffer]
                buf = torch.cat([leftover] + [self._checked(shards[i][0][:], f"train shard {i}")
                                              for i in group])
                buf = buf[torch.from_numpy(rng.permutation(len(buf)))]
                n_full = len(buf) // batch_size
                for b in range(n_full):
                    if done >= total:
                        return
                    yield buf[b * batch_size:(b + 1) * batch_size]
                    done += batch_size
                leftover = buf[n_full * batch_size:]
            epoch += 1
            if n_full == 0 and epoch > 1 and len(leftover) < batch_size:
                raise BadInputError(f"batch size {batch_size} exceeds the {self.n_train_tokens} "
                                    "training tokens in the store")

    def train_sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """A uniform sample of up to n training activations, float32 (n, d_model)."""
        import torch

        rng = np.random.default_rng(seed)
        n = min(n, self.n_train_tokens)
        idx = np.sort(rng.choice(self.n_train_tokens, size=n, replace=False))
        out, base = [], 0
        for i, (acts, _, _) in enumerate(self._shards["train"]):
            local = idx[(idx >= base) & (idx < base + len(acts))] - base
            if len(local):
                out.append(self._checked(acts[local], f"train shard {i}"))
            base += len(acts)
        return torch.cat(out)

    def eval_chunks(self, max_fragments: int = 256) -> Iterator[EvalChunk]:
        """Stream the eval fragments in order, at most `max_fragments` at a time."""
        L, first = self.fragment_len, 0
        for i, (acts, tokens, offsets) in enumerate(self._shards["eval"]):
            n = len(offsets) - 1
            for s in range(0, n, max_fragments):
                e = min(n, s + max_fragments)
                a = self._checked(acts[offsets[s]:offsets[e]], f"eval shard {i}")
                t = np.asarray(tokens[offsets[s]:offsets[e]])
                yield EvalChunk(first + s, t.reshape(e - s, L), a.reshape(e - s, L, self.d_model))
            first += n

    def eval_fragment_tokens(self, index: int) -> np.ndarray:
        """Token ids of one eval fragment, by global index."""
        for _, tokens, offsets in self._shards["eval"]:
            n = len(offsets) - 1
            if index < n:
                return np.asarray(tokens[offsets[index]:offsets[index + 1]])
            index -= n
        raise IndexError(index)

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path / "tokenizer")
