"""Harvest: run the subject model over a corpus and store one hook point's activation for every
token, in the sharded format of autointerp/store.py.

Each model input is [BOS] + up to `fragment_len` tokens of one document; the BOS position is
not stored (its activation is a huge attention-sink outlier, not a feature of the text) and
neither is padding. Documents, not tokens, are split into train and eval by a seeded hash of
their id, so no eval fragment shares a document with the training data. Eval keeps whole
`fragment_len` fragments only: they are the 64-token fragments that scoring shows to the
explainer and simulator (Bills et al. 2023).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from autointerp.errors import AutointerpError, BadInputError
from autointerp.harvest.corpus import Corpus, open_corpus
from autointerp.harvest.hook_names import split_hook
from autointerp.harvest.hooks import (
    check_hook_supported,
    check_input_transform,
    effective_transform,
    resolve_hook_name,
    uses_layernorm,
)
from autointerp.harvest.models import (
    DEFAULT_MODEL,
    LoadedModel,
    capture,
    load_causal_lm,
    parse_hook,
)
from autointerp.harvest.shards import ShardWriter, harvest_progress, make_batch, prefix_token_id
from autointerp.harvest.store import (
    SPLITS,
    STORE_DTYPES,
    atomic_write_json,
    completed_shards,
    remove_stale_temp_files,
)


@dataclass(frozen=True)
class HarvestConfig:
    layer: int | None = None
    """Decoder block index, from 0; None for embed (or when `hook` names the layer)."""
    hook: str = "resid"
    """A kind (resid, resid_mid, mlp, attn) with `layer`, or one full name in our,
    TransformerLens/sae-lens or sparsify vocabulary (embed, blocks.3.hook_resid_pre, layers.3):
    see autointerp/harvest/hooks.py. Normalised to (kind, layer) in __post_init__."""
    model: str = DEFAULT_MODEL
    """Hugging Face id, local folder, or smollm2-135m (offline default)."""
    corpus: str = "builtin"
    """builtin, a .txt/.jsonl file or folder, or hf:NAME."""
    n_tokens: int = 1_000_000
    """Tokens to store, train and eval together (BOS and padding not counted)."""
    out: Path | None = None
    """Store folder; default data/activations/<model>-<hook>-<corpus>-<tokens>-<args hash>."""
    eval_fraction: float = 0.1
    """Share of documents held out for eval fragments."""
    fragment_len: int = 64
    """Tokens per model input after BOS; eval fragments are exactly this long."""
    batch_size: int = 32
    seed: int = 0
    """Seeds the train/eval split of documents."""
    device: str = "auto"
    dtype: str = "auto"
    """Model compute dtype: auto (see models.resolve_dtype), float32, bfloat16, float16."""
    store_dtype: str = "float16"
    shard_tokens: int = 65536
    """A shard is written once its buffer holds this many tokens (whole sequences only)."""
    random_init: int | None = None
    """Re-initialise the model's weights with this seed (random-model control)."""
    text_field: str = "text"
    """Field holding the text in .jsonl and Hugging Face corpora."""
    overwrite: bool = False
    """Replace an existing store made with other arguments."""
    input_transform: str | None = None
    """None, or `center`: subtract each position's mean over d_model (TransformerLens's
    center_writing_weights), for SAEs trained on TransformerLens's processed activations."""

    def __post_init__(self):
        kind, layer = split_hook(resolve_hook_name(self.hook, self.layer))
        object.__setattr__(self, "hook", kind)
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "input_transform", check_input_transform(self.input_transform))
        positive = {"n_tokens": self.n_tokens, "fragment_len": self.fragment_len,
                    "batch_size": self.batch_size, "shard_tokens": self.shard_tokens}
        for name, value in positive.items():
            if value < 1:
                raise BadInputError(f"{name.replace('_', '-')} must be at least 1, got {value}")
        if self.layer is not None and self.layer < 0:
            raise BadInputError(f"layer must be 0 or more, got {self.layer}")
        if not 0 <= self.eval_fraction < 1:
            raise BadInputError(f"eval-fraction must be in [0, 1), got {self.eval_fraction}")
        if self.store_dtype not in STORE_DTYPES:
            raise BadInputError(f"store-dtype must be one of {', '.join(STORE_DTYPES)}")
        object.__setattr__(self, "out", Path(self.out) if self.out is not None else self._default_out())

    @property
    def hook_spec(self) -> str:
        return "embed" if self.hook == "embed" else f"{self.hook}.{self.layer}"

    def identity(self) -> dict:
        """The arguments a store must have been made with to be reused or resumed. Batch size
        is left out on purpose: it changes speed and memory, not which tokens are stored."""
        args = {k: v for k, v in asdict(self).items() if k not in ("out", "overwrite", "batch_size")}
        if self.input_transform is None:  # stores made before the option existed stay valid
            del args["input_transform"]
        return json.loads(json.dumps(args, default=str))

    def _default_out(self) -> Path:
        def slug(text: str) -> str:
            return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(text).name or text).strip("_")[:40]

        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]
        return Path("data/activations") / (f"{slug(self.model)}-{self.hook_spec}-{slug(self.corpus)}"
                                           f"-{self.n_tokens}-{digest}")


@dataclass(frozen=True)
class Sequence:
    split: str
    """train | eval"""
    index: int
    """Position among this split's sequences, in stream order (resume skips by it)."""
    token_ids: list[int] = field(repr=False)


def is_eval_document(doc_id: str, seed: int, eval_fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}\0{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < eval_fraction * 2**64


def iter_sequences(corpus: Corpus, tokenizer, cfg: HarvestConfig,
                   dropped: dict[str, int] | None = None) -> Iterator[Sequence]:
    """Cut each document into model inputs, stopping once n_tokens are reached. Deterministic,
    so a resumed run sees the same sequences with the same indices."""
    counts = dict.fromkeys(SPLITS, 0)
    total = 0
    for doc in corpus:
        split = "eval" if is_eval_document(doc.id, cfg.seed, cfg.eval_fraction) else "train"
        ids = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), cfg.fragment_len):
            chunk = ids[start:start + cfg.fragment_len]
            if split == "eval" and len(chunk) < cfg.fragment_len:
                break
            # A cut through a multi-byte character decodes to U+FFFD; such fragments cannot be
            # shown to an explainer faithfully, so neither split keeps them.
            if "\ufffd" in tokenizer.decode(chunk):
                if dropped is not None:
                    dropped[split] += 1
                continue
            yield Sequence(split, counts[split], chunk)
            counts[split] += 1
            total += len(chunk)
            if total >= cfg.n_tokens:
                return


def harvest(cfg: HarvestConfig, on_shard: Callable[[str, int], None] | None = None) -> Path:
    """Write (or finish, or reuse) the activation store cfg.out; return its path.
    `on_shard(split, index)` is called after each shard is written."""
    state = _existing_state(cfg)
    if state == "complete":
        return cfg.out
    corpus = open_corpus(cfg.corpus, cfg.text_field)
    loaded = load_causal_lm(cfg.model, cfg.device, cfg.dtype, cfg.random_init)
    hook = parse_hook(cfg.hook_spec, loaded.n_layers, cfg.model)
    check_hook_supported(loaded.model, hook, cfg.model)
    if state == "replace":
        shutil.rmtree(cfg.out)
    created = state != "resume"
    if not created:  # a killed run's half-written files, under temporary names
        for folder in (cfg.out, *(cfg.out / s for s in SPLITS)):
            remove_stale_temp_files(folder)
    try:
        meta = _start_metadata(cfg, loaded, hook, corpus) if created else _read_meta(cfg.out)
        # Saved on every run, after metadata.json: a run killed mid-save is then resumable.
        loaded.tokenizer.save_pretrained(cfg.out / "tokenizer")
        _run(cfg, loaded, hook, corpus, meta, on_shard)
    except AutointerpError:
        if created:  # a user error must not leave a half-written store behind
            shutil.rmtree(cfg.out, ignore_errors=True)
        raise
    return cfg.out


def _read_meta(out: Path) -> dict:
    try:
        return json.loads((out / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise BadInputError(f"{out} exists and is not an activation store; choose another --out") from None


def _existing_state(cfg: HarvestConfig) -> str:
    """new | resume | complete | replace, or BadInputError for a store made otherwise."""
    out = cfg.out
    if not out.exists():
        return "new"
    if not out.is_dir():
        raise BadInputError(f"--out {out} is a file, not a folder")
    if not any(out.iterdir()):
        return "new"
    meta = _read_meta(out)
    if cfg.overwrite:
        return "replace"
    new = cfg.identity()
    if meta.get("args") != new:
        old = meta.get("args") or {}
        diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        raise BadInputError(f"{out} holds a store made with other arguments (different: "
                            f"{', '.join(diff)}); pass --overwrite to replace it, or choose another --out")
    return "complete" if meta.get("status") == "complete" else "resume"


def _start_metadata(cfg: HarvestConfig, loaded: LoadedModel, hook, corpus: Corpus) -> dict:
    cfg.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "status": "incomplete", "args": cfg.identity(),
        "model": cfg.model, "model_hash": loaded.weights_hash, "random_init": cfg.random_init,
        "hook": hook.name, "hook_kind": hook.kind, "layer": hook.layer,
        # What the stored numbers are: `center` is a no-op for RMSNorm models (as in
        # TransformerLens), so such a store records none, and says either is fine.
        "input_transform": effective_transform(loaded.model, cfg.input_transform),
        "center_is_noop": not uses_layernorm(loaded.model),
        "n_layers": loaded.n_layers, "d_model": loaded.d_model, "dtype": loaded.dtype,
        "device": loaded.device, "store_dtype": cfg.store_dtype, "fragment_len": cfg.fragment_len,
        "corpus": cfg.corpus, "corpus_fingerprint": corpus.fingerprint, "seed": cfg.seed,
        "eval_fraction": cfg.eval_fraction, "n_tokens_requested": cfg.n_tokens,
        "bos_token_id": prefix_token_id(loaded.tokenizer), "prepend_bos": True,
        "tool_version": importlib.metadata.version("autointerp"),
        "torch_version": torch.__version__,
        "transformers_version": importlib.metadata.version("transformers"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(cfg.out / "metadata.json", meta)
    return meta


def _run(cfg: HarvestConfig, loaded: LoadedModel, hook, corpus: Corpus, meta: dict,
         on_shard: Callable[[str, int], None] | None) -> None:
    writers = {s: ShardWriter(cfg.out / s, cfg.store_dtype, cfg.shard_tokens,
                              completed_shards(cfg.out / s), on_shard) for s in SPLITS}
    done_tokens = sum(w.stored_tokens for w in writers.values())
    prefix_id = prefix_token_id(loaded.tokenizer)
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else prefix_id
    dropped = dict.fromkeys(SPLITS, 0)
    pending: list[Sequence] = []
    computed, started, cpu_started = 0, time.perf_counter(), time.process_time()
    with harvest_progress(cfg.n_tokens, done_tokens, hook.name) as advance:
        for seq in iter_sequences(corpus, loaded.tokenizer, cfg, dropped):
            if seq.index < writers[seq.split].done_sequences:
                continue  # stored by an earlier run (resume)
            pending.append(seq)
            if len(pending) == cfg.batch_size:
                computed += _forward_batch(loaded, hook, pending, prefix_id, pad_id, writers, cfg)
                advance(sum(len(s.token_ids) for s in pending))
                pending = []
        if pending:
            computed += _forward_batch(loaded, hook, pending, prefix_id, pad_id, writers, cfg)
            advance(sum(len(s.token_ids) for s in pending))
        for w in writers.values():
            w.flush()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    infos = {s: w.infos for s, w in writers.items()}
    n_train = sum(i["n_tokens"] for i in infos["train"])
    n_eval = sum(i["n_tokens"] for i in infos["eval"])
    meta.update({
        "status": "complete", "shards": infos, "n_train_tokens": n_train, "n_eval_tokens": n_eval,
        "n_eval_fragments": sum(i["n_fragments"] for i in infos["eval"]),
        "n_train_sequences": sum(i["n_sequences"] for i in infos["train"]),
        "dropped_fffd_fragments": dropped, "corpus_exhausted": n_train + n_eval < cfg.n_tokens,
        "last_run": {"computed_tokens": computed, "seconds": round(seconds, 2),
                     "cpu_seconds": round(cpu_seconds, 2), "threads": torch.get_num_threads(),
                     "tokens_per_second": round(computed / max(seconds, 1e-9), 1),
                     "batch_size": cfg.batch_size},
    })
    atomic_write_json(cfg.out / "metadata.json", meta)
    if cfg.eval_fraction > 0 and not infos["eval"]:
        Console(stderr=True).print(f"warning: no eval fragments in {cfg.out}: every document read "
                                   "fell in the train split; harvest more --tokens", style="yellow")


def _forward_batch(loaded: LoadedModel, hook, batch: list[Sequence], prefix_id: int,
                   pad_id: int, writers: dict[str, ShardWriter], cfg: HarvestConfig) -> int:
    ids, mask = make_batch(batch, prefix_id, pad_id)
    acts = capture(loaded, hook, ids, mask, cfg.input_transform)  # (batch, 1 + longest, d_model)
    keep = mask.bool()
    keep[:, 0] = False  # BOS, whose activation is an outlier that may not even fit in fp16
    real = acts[keep.to(acts.device)]  # (n_tokens, d_model), sequence after sequence
    stored = real.to(dtype=getattr(torch, cfg.store_dtype)).cpu()
    # One float32 reduction: any inf or NaN propagates into the sum, finite fp16 rows cannot
    # overflow it. Cheaper than an elementwise isfinite on every batch.
    if not torch.isfinite(stored.sum(dtype=torch.float32)):
        if not torch.isfinite(real).all():
            raise BadInputError(f"the model produced NaN or inf activations at {hook.name}; "
                                "try --dtype float32")
        raise BadInputError("activations overflow float16; harvest again with --store-dtype bfloat16")
    lengths = [len(s.token_ids) for s in batch]
    for seq, rows in zip(batch, torch.split(stored, lengths), strict=True):
        writers[seq.split].add(seq, rows, np.asarray(seq.token_ids, np.int32))
    return sum(lengths)
