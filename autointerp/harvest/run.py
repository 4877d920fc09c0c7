"""Harvest: run the subject model over a corpus and store one hook point's activation for every
token, in the sharded format of autointerp/store.py.

Each model input is [BOS] + up to `fragment_len` tokens of one document; the BOS position is
not stored (its activation is a huge attention-sink outlier, not a feature of the text) and
neither is padding. Documents, not tokens, are split into train and eval by a seeded hash of
their id, so no eval fragment shares a document with the training data. Eval keeps whole
`fragment_len` fragments only: they are the 64-token fragments that scoring shows to the
explainer and simulator (Bills et al. 2023).

Several hook points share one pass (`harvest_many`): one store per hook point, each identical
to what a single-hook harvest of it writes. Under torchrun each rank owns a contiguous run of
the document stream (by the count of tokens stored before a document starts), runs the model
on its documents only and writes its own shards under `split/rankNNN/`; rank 0 writes
metadata.json, whose shard list in rank order reads back as the single-process stream.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from autointerp.distributed import World, current_world, main_first
from autointerp.errors import AutointerpError, BadInputError
from autointerp.harvest.corpus import Corpus, open_corpus
from autointerp.harvest.hook_names import split_hook
from autointerp.harvest.hooks import (
    Hook,
    capture_many,
    check_hook_supported,
    check_input_transform,
    resolve_hook_name,
    transform_activation,
)
from autointerp.harvest.models import DEFAULT_MODEL, LoadedModel, load_causal_lm, parse_hook
from autointerp.harvest.multihook import check_one_pass
from autointerp.harvest.shards import ShardWriter, harvest_progress, make_batch, prefix_token_id
from autointerp.harvest.store import SPLITS, STORE_DTYPES, completed_shards, remove_stale_temp_files
from autointerp.harvest.storemeta import agreed_states, finish_metadata, prepare_store

__all__ = ["HarvestConfig", "Sequence", "harvest", "harvest_many", "is_eval_document",
           "iter_sequences", "make_batch", "prefix_token_id"]


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
                   dropped: dict[str, int] | None = None, rank: int = 0,
                   world_size: int = 1) -> Iterator[Sequence]:
    """Cut each document into model inputs, stopping once n_tokens are reached. Deterministic,
    so a resumed run sees the same sequences with the same indices.

    With several ranks, a document belongs to rank floor(W * stored_before / n_tokens), where
    stored_before counts the tokens of the whole stream before the document: each rank gets a
    contiguous run of whole documents, and yields (and counts as dropped) only its own, with
    indices counted among its own. Earlier ranks' documents are tokenised, not computed."""
    counts = dict.fromkeys(SPLITS, 0)
    total = 0
    for doc in corpus:
        owner = min(world_size - 1, total * world_size // cfg.n_tokens)
        if owner > rank:
            return
        mine = owner == rank
        split = "eval" if is_eval_document(doc.id, cfg.seed, cfg.eval_fraction) else "train"
        ids = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), cfg.fragment_len):
            chunk = ids[start:start + cfg.fragment_len]
            if split == "eval" and len(chunk) < cfg.fragment_len:
                break
            # A cut through a multi-byte character decodes to U+FFFD; such fragments cannot be
            # shown to an explainer faithfully, so neither split keeps them.
            if "\ufffd" in tokenizer.decode(chunk):
                if dropped is not None and mine:
                    dropped[split] += 1
                continue
            if mine:
                yield Sequence(split, counts[split], chunk)
                counts[split] += 1
            total += len(chunk)
            if total >= cfg.n_tokens:
                return


def harvest(cfg: HarvestConfig, on_shard: Callable[[str, int], None] | None = None) -> Path:
    """Write (or finish, or reuse) the activation store cfg.out; return its path.
    `on_shard(split, index)` is called after each shard is written."""
    return harvest_many([cfg], on_shard)[0]


@dataclass(frozen=True)
class _Target:
    """One store being written by this rank: its settings, hook point and shard writers."""

    cfg: HarvestConfig
    hook: Hook
    writers: dict[str, ShardWriter]


def harvest_many(cfgs: list[HarvestConfig],
                 on_shard: Callable[[str, int], None] | None = None) -> list[Path]:
    """One store per config from a single pass over the corpus (the configs differ only in
    hook point and --out). Under torchrun every rank calls this with the same configs."""
    check_one_pass(cfgs)
    world = current_world()
    states = agreed_states(cfgs, world)
    todo = [(c, s) for c, s in zip(cfgs, states, strict=True) if s != "complete"]
    if not todo:
        return [c.out for c in cfgs]
    first = todo[0][0]
    corpus = open_corpus(first.corpus, first.text_field)
    with main_first(world):  # rank 0 replaces old stores and fills the model cache first
        if world.is_main:
            for cfg, state in todo:
                if state == "replace":
                    shutil.rmtree(cfg.out)
        loaded = load_causal_lm(first.model, world.device(first.device), first.dtype, first.random_init)
        hooks = [parse_hook(c.hook_spec, loaded.n_layers, c.model) for c, _ in todo]
        for (cfg, _), hook in zip(todo, hooks, strict=True):
            check_hook_supported(loaded.model, hook, cfg.model)
        if world.is_main:
            for (cfg, state), hook in zip(todo, hooks, strict=True):
                prepare_store(cfg, state, loaded, hook, corpus, world)
    targets = [_Target(c, h, _writers(c, world, on_shard)) for (c, _), h in zip(todo, hooks, strict=True)]
    error: AutointerpError | None = None
    try:
        report = _run(first, loaded, targets, corpus, world)
    except AutointerpError as e:
        error, report = e, None
    # Unconditional, so that no rank waits in a collective that another rank skipped.
    reports = world.gather(str(error) if error is not None else report)
    failed = [(r, x) for r, x in enumerate(reports) if isinstance(x, str)]
    if failed:
        if world.is_main:  # a user error must not leave a half-written store behind
            for cfg, state in todo:
                if state != "resume":
                    shutil.rmtree(cfg.out, ignore_errors=True)
        if error is not None:
            raise error
        raise BadInputError(f"rank {failed[0][0]}: {failed[0][1]}")
    if world.is_main:
        for i, (cfg, _) in enumerate(todo):
            finish_metadata(cfg.out, cfg, [r[i] for r in reports])
    world.barrier()
    return [c.out for c in cfgs]


def _writers(cfg: HarvestConfig, world: World,
             on_shard: Callable[[str, int], None] | None) -> dict[str, ShardWriter]:
    """This rank's writer per split: a world of one writes split/NNNNN, rank r of several
    split/rankRRR/NNNNN, so that each rank resumes from its own shards."""
    writers = {}
    for split in SPLITS:
        rank = world.rank if world.distributed else None
        folder = cfg.out / split if rank is None else cfg.out / split / f"rank{rank:03d}"
        remove_stale_temp_files(folder)
        writers[split] = ShardWriter(folder, cfg.store_dtype, cfg.shard_tokens,
                                     completed_shards(folder), on_shard, split=split, rank=rank)
    return writers


def _run(cfg: HarvestConfig, loaded: LoadedModel, targets: list[_Target], corpus: Corpus,
         world: World) -> list[dict]:
    """This rank's pass over its documents; returns per target what finish_metadata needs."""
    prefix_id = prefix_token_id(loaded.tokenizer)
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else prefix_id
    dropped = dict.fromkeys(SPLITS, 0)
    pending: list[tuple[Sequence, list[_Target]]] = []
    done_tokens = min(sum(w.stored_tokens for w in t.writers.values()) for t in targets)
    share = -(-cfg.n_tokens // world.world_size)
    label = targets[0].hook.name + (f" (+{len(targets) - 1} more)" if len(targets) > 1 else "")
    computed, started, cpu_started = 0, time.perf_counter(), time.process_time()
    with harvest_progress(share, done_tokens, label, enabled=world.is_main) as advance:
        sequences = iter_sequences(corpus, loaded.tokenizer, cfg, dropped, world.rank, world.world_size)
        for seq in sequences:
            needed = [t for t in targets if seq.index >= t.writers[seq.split].done_sequences]
            if needed:  # else stored by an earlier run, for every store (resume)
                pending.append((seq, needed))
            if len(pending) == cfg.batch_size:
                computed += _forward_batch(loaded, pending, prefix_id, pad_id, cfg)
                advance(sum(len(s.token_ids) for s, _ in pending))
                pending = []
        if pending:
            computed += _forward_batch(loaded, pending, prefix_id, pad_id, cfg)
            advance(sum(len(s.token_ids) for s, _ in pending))
        for target in targets:
            for writer in target.writers.values():
                writer.flush()
    timing = {"computed": computed, "seconds": time.perf_counter() - started,
              "cpu_seconds": time.process_time() - cpu_started, "threads": torch.get_num_threads(),
              "dropped": dropped}
    return [{**timing, "shards": {s: w.infos for s, w in t.writers.items()}} for t in targets]


def _forward_batch(loaded: LoadedModel, batch: list[tuple[Sequence, list[_Target]]], prefix_id: int,
                   pad_id: int, cfg: HarvestConfig) -> int:
    sequences = [seq for seq, _ in batch]
    ids, mask = make_batch(sequences, prefix_id, pad_id)
    hooks = list({t.hook.name: t.hook for _, needed in batch for t in needed}.values())
    captured = capture_many(loaded, hooks, ids, mask)  # name -> (batch, 1 + longest, d_model)
    by_name = {h.name: h for h in hooks}
    captured = {name: transform_activation(loaded.model, by_name[name], acts, cfg.input_transform)
                for name, acts in captured.items()}
    keep = mask.bool()
    keep[:, 0] = False  # BOS, whose activation is an outlier that may not even fit in fp16
    lengths = [len(s.token_ids) for s in sequences]
    rows = {name: torch.split(_stored_rows(acts, keep, cfg.store_dtype, name), lengths)
            for name, acts in captured.items()}
    for i, (seq, needed) in enumerate(batch):
        tokens = np.asarray(seq.token_ids, np.int32)
        for target in needed:
            target.writers[seq.split].add(seq, rows[target.hook.name][i], tokens)
    return sum(lengths)


def _stored_rows(acts: torch.Tensor, keep: torch.Tensor, store_dtype: str, hook_name: str) -> torch.Tensor:
    """The real tokens' activations, sequence after sequence, in the store dtype on the CPU."""
    real = acts[keep.to(acts.device)]  # (n_tokens, d_model)
    stored = real.to(dtype=getattr(torch, store_dtype)).cpu()
    # One float32 reduction: any inf or NaN propagates into the sum, finite fp16 rows cannot
    # overflow it. Cheaper than an elementwise isfinite on every batch.
    if not torch.isfinite(stored.sum(dtype=torch.float32)):
        if not torch.isfinite(real).all():
            raise BadInputError(f"the model produced NaN or inf activations at {hook_name}; "
                                "try --dtype float32")
        raise BadInputError("activations overflow float16; harvest again with --store-dtype bfloat16")
    return stored
