"""A store's metadata.json over a harvest's life: what an existing folder holds (new, resume,
complete, replace), the metadata written when a store is started, and the totals written when
every rank has finished. Rank 0 alone writes it; the ranks' shard lists are concatenated in
rank order, which is the store's read order (see run.py: rank r holds a contiguous run of the
document stream, so that order is the single-process order)."""

from __future__ import annotations

import importlib.metadata
import json
import time
from pathlib import Path

import torch
from rich.console import Console

from autointerp.distributed import World
from autointerp.errors import BadInputError
from autointerp.harvest.hooks import effective_transform, how_read, uses_layernorm
from autointerp.harvest.shards import prefix_token_id
from autointerp.harvest.store import SPLITS, atomic_write_json, remove_stale_temp_files
from autointerp.harvest.sublayers import hook_width


def read_meta(out: Path) -> dict:
    try:
        return json.loads((out / "metadata.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise BadInputError(f"{out} exists and is not an activation store; choose another --out") from None


def existing_state(out: Path, identity: dict, overwrite: bool, world_size: int) -> str:
    """new | resume | complete | replace, or BadInputError for a store made otherwise."""
    if not out.exists():
        return "new"
    if not out.is_dir():
        raise BadInputError(f"--out {out} is a file, not a folder")
    if not any(out.iterdir()):
        return "new"
    meta = read_meta(out)
    if overwrite:
        return "replace"
    if meta.get("args") != identity:
        old = meta.get("args") or {}
        diff = [k for k in sorted(set(old) | set(identity)) if old.get(k) != identity.get(k)]
        raise BadInputError(f"{out} holds a store made with other arguments (different: "
                            f"{', '.join(diff)}); pass --overwrite to replace it, or choose another --out")
    if meta.get("status") == "complete":
        return "complete"  # read the same way whatever the number of processes that wrote it
    started = meta.get("world_size", 1)
    if started != world_size:  # each rank's share of the documents depends on the world size
        raise BadInputError(f"{out} is a harvest started by {started} process(es); finish it with "
                            f"{started} (torchrun --nproc_per_node) or pass --overwrite")
    return "resume"


def start_metadata(out: Path, cfg, loaded, hook, corpus, prefix_id: int, world_size: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "status": "incomplete", "args": cfg.identity(),
        "model": cfg.model, "model_hash": loaded.weights_hash, "random_init": cfg.random_init,
        "hook": hook.name, "hook_kind": hook.kind, "layer": hook.layer,
        "hook_read": how_read(loaded.model, hook),
        # What the stored numbers are: `center` is a no-op for RMSNorm models (as in
        # TransformerLens), so such a store records none, and says either is fine.
        "input_transform": effective_transform(loaded.model, cfg.input_transform, hook),
        "center_is_noop": not uses_layernorm(loaded.model),
        "n_layers": loaded.n_layers, "d_model": hook_width(loaded.model, hook, loaded.d_model),
        "dtype": loaded.dtype,
        "device": loaded.device.split(":")[0], "store_dtype": cfg.store_dtype,
        "fragment_len": cfg.fragment_len, "corpus": cfg.corpus,
        "corpus_fingerprint": corpus.fingerprint, "seed": cfg.seed,
        "eval_fraction": cfg.eval_fraction, "n_tokens_requested": cfg.n_tokens,
        "bos_token_id": prefix_id, "prepend_bos": True, "world_size": world_size,
        "tool_version": importlib.metadata.version("autointerp"),
        "torch_version": torch.__version__,
        "transformers_version": importlib.metadata.version("transformers"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(out / "metadata.json", meta)
    return meta


def finish_metadata(out: Path, cfg, ranks: list[dict]) -> None:
    """Write the totals once every rank has finished. `ranks[r]`: rank r's shard infos per
    split, dropped fragments per split, and timing of this run."""
    meta = read_meta(out)
    infos = {s: [i for r in ranks for i in r["shards"][s]] for s in SPLITS}
    n_train = sum(i["n_tokens"] for i in infos["train"])
    n_eval = sum(i["n_tokens"] for i in infos["eval"])
    computed = sum(r["computed"] for r in ranks)
    seconds = max(r["seconds"] for r in ranks)
    meta.update({
        "status": "complete", "shards": infos, "n_train_tokens": n_train, "n_eval_tokens": n_eval,
        "n_eval_fragments": sum(i["n_fragments"] for i in infos["eval"]),
        "n_train_sequences": sum(i["n_sequences"] for i in infos["train"]),
        "dropped_fffd_fragments": {s: sum(r["dropped"][s] for r in ranks) for s in SPLITS},
        "corpus_exhausted": n_train + n_eval < cfg.n_tokens,
        "last_run": {"computed_tokens": computed, "seconds": round(seconds, 2),
                     "cpu_seconds": round(sum(r["cpu_seconds"] for r in ranks), 2),
                     "threads": ranks[0]["threads"], "processes": len(ranks),
                     "tokens_per_second": round(computed / max(seconds, 1e-9), 1),
                     "batch_size": cfg.batch_size},
    })
    atomic_write_json(out / "metadata.json", meta)
    if cfg.eval_fraction > 0 and not infos["eval"]:
        Console(stderr=True).print(f"warning: no eval fragments in {out}: every document read "
                                   "fell in the train split; harvest more --tokens", style="yellow")


def agreed_states(cfgs: list, world: World) -> list[str]:
    """Rank 0 reads what each --out holds and tells the others (it alone changes the folders)."""
    state: list[str] | str
    try:
        state = [existing_state(c.out, c.identity(), c.overwrite, world.world_size) for c in cfgs] \
            if world.is_main else []
    except BadInputError as e:
        state = str(e)
    state = world.broadcast(state)
    if isinstance(state, str):
        raise BadInputError(state)
    return state


def prepare_store(cfg, state: str, loaded, hook, corpus, world: World) -> None:
    """Rank 0, before any rank writes shards: start a new store's metadata, or clear a
    resumed one's stale temporary files; save the tokenizer."""
    if state == "resume":  # a killed run's half-written files, under temporary names
        remove_stale_temp_files(cfg.out)
    else:
        start_metadata(cfg.out, cfg, loaded, hook, corpus, prefix_token_id(loaded.tokenizer),
                       world.world_size)
    # Saved on every run, after metadata.json: a run killed mid-save is then resumable.
    loaded.tokenizer.save_pretrained(cfg.out / "tokenizer")
