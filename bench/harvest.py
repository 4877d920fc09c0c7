"""Harvest benchmark (not a test): prints figures and ratios measured in the same run.

    python bench/harvest.py                      # ratio, dtypes, load time, corpus tokens
    python bench/harvest.py --part rss --rss-tokens 1000000

ratio   harvest tokens/s (the real harvest loop: tokenize, forward, copy, write shards) over a
        bare forward pass up to the same hook on the same batches (prebuilt). Target >= 0.85.
dtype   bare tokens/s in float32 and bfloat16 (why the CPU default is what it is).
load    a second load of smollm2-135m in a fresh process (target < 2 s).
corpus  SmolLM2 tokens per genre of the builtin corpus (target >= 3M in all).
rss     peak RSS of a harvest child process (target < 3 GiB at 1M tokens).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from autointerp.harvest.corpus import open_corpus
from autointerp.harvest.models import capture, load_causal_lm, parse_hook
from autointerp.harvest.run import (
    HarvestConfig,
    harvest,
    iter_sequences,
    make_batch,
    prefix_token_id,
)


def bare_tokens_per_second(lm, hook, batches, n_tokens: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second) of capture() alone."""
    started, cpu_started = time.perf_counter(), time.process_time()
    for ids, mask in batches:
        capture(lm, hook, ids, mask)
    return n_tokens / (time.perf_counter() - started), n_tokens / (time.process_time() - cpu_started)


def prebuilt_batches(lm, cfg: HarvestConfig):
    seqs = list(iter_sequences(open_corpus(cfg.corpus), lm.tokenizer, cfg))
    prefix = prefix_token_id(lm.tokenizer)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else prefix
    batches = [make_batch(seqs[i:i + cfg.batch_size], prefix, pad)
               for i in range(0, len(seqs), cfg.batch_size)]
    return batches, sum(len(s.token_ids) for s in seqs)


def part_ratio(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _ratio(args, Path(tmp))


def _ratio(args, tmp: Path) -> None:
    cfg = HarvestConfig(out=tmp / "unused", layer=args.layer,
                        n_tokens=args.tokens, batch_size=args.batch_size, dtype=args.dtype)
    lm = load_causal_lm(cfg.model, cfg.device, cfg.dtype)
    hook = parse_hook(cfg.hook_spec, lm.n_layers, cfg.model)
    batches, n_tokens = prebuilt_batches(lm, cfg)
    bare_tokens_per_second(lm, hook, batches[:2], 1)  # warm-up
    bare, real = [], []
    for rep in range(args.repeats):  # alternate, so load from other processes hits both alike
        bare.append(bare_tokens_per_second(lm, hook, batches, n_tokens))
        out = cfg.out.parent / f"run{rep}"
        harvest(HarvestConfig(**{**cfg.__dict__, "out": out}))
        run = json.loads((out / "metadata.json").read_text())["last_run"]
        real.append((run["tokens_per_second"], run["computed_tokens"] / run["cpu_seconds"]))
    print(f"[ratio] model={cfg.model} hook={cfg.hook_spec} dtype={lm.dtype} threads={torch.get_num_threads()} "
          f"batch={cfg.batch_size} tokens={n_tokens} repeats={args.repeats}")
    for i, clock in enumerate(("wall", "CPU")):
        b, r = statistics.median(x[i] for x in bare), statistics.median(x[i] for x in real)
        print(f"[ratio] per {clock} second: bare forward {b:,.0f} tok/s  harvest {r:,.0f} tok/s  "
              f"ratio {r / b:.3f} (target >= 0.85); runs bare {[round(x[i]) for x in bare]} "
              f"harvest {[round(x[i]) for x in real]}")


def part_dtype(args) -> None:
    results = {}
    for dtype in ("float32", "bfloat16"):
        cfg = HarvestConfig(out=Path("unused"), layer=args.layer, n_tokens=args.tokens // 2,
                            batch_size=args.batch_size, dtype=dtype)
        lm = load_causal_lm(cfg.model, "cpu", dtype)
        hook = parse_hook(cfg.hook_spec, lm.n_layers)
        batches, n = prebuilt_batches(lm, cfg)
        bare_tokens_per_second(lm, hook, batches[:1], 1)
        results[dtype] = [bare_tokens_per_second(lm, hook, batches, n) for _ in range(args.repeats)]
    for i, clock in enumerate(("wall", "CPU")):
        f32, bf16 = (statistics.median(r[i] for r in results[d]) for d in ("float32", "bfloat16"))
        print(f"[dtype] resid.{args.layer} bare forward per {clock} second: float32 {f32:,.0f} tok/s  "
              f"bfloat16 {bf16:,.0f} tok/s  bf16/fp32 {bf16 / f32:.2f} (threads={torch.get_num_threads()})")


def part_load(args) -> None:
    """Wall and CPU seconds of a fresh process's load_causal_lm('smollm2-135m') once the
    converted copy exists: first with transformers' lazy imports, then a second call (CPU
    seconds stand in for wall time on a shared, overloaded machine)."""
    load_causal_lm("smollm2-135m")  # make sure the converted copy exists
    code = ("import time; c = time.process_time; w = time.perf_counter; t = [(w(), c())]; "
            "from autointerp.harvest.models import load_causal_lm; t.append((w(), c())); "
            "load_causal_lm('smollm2-135m'); t.append((w(), c())); "
            "load_causal_lm('smollm2-135m'); t.append((w(), c())); "
            "print(*[f'{b[0] - a[0]:.2f} {b[1] - a[1]:.2f}' for a, b in zip(t, t[1:])])")
    runs = [[float(x) for x in subprocess.run([sys.executable, "-c", code], capture_output=True,
                                               text=True, check=True).stdout.split()]
            for _ in range(args.repeats)]
    med = [statistics.median(r[i] for r in runs) for i in range(6)]
    print(f"[load] smollm2-135m from the cached copy, fresh process, median of {args.repeats} "
          f"(wall / CPU s): import torch+autointerp {med[0]:.2f} / {med[1]:.2f}; first load incl. "
          f"transformers' lazy imports {med[2]:.2f} / {med[3]:.2f}; second load {med[4]:.2f} / "
          f"{med[5]:.2f} (target < 2 s)")


def part_corpus(args) -> None:
    lm = load_causal_lm("smollm2-135m")
    counts: dict[str, int] = {}
    for doc in open_corpus("builtin"):
        n = len(lm.tokenizer(doc.text, add_special_tokens=False)["input_ids"])
        counts[doc.genre] = counts.get(doc.genre, 0) + n
    print(f"[corpus] builtin SmolLM2 tokens: {counts}  total {sum(counts.values()):,}")


def part_rss(args) -> None:
    code = (f"import sys, torch; torch.set_num_threads({args.threads or torch.get_num_threads()}); "
            "from pathlib import Path; from autointerp.harvest.run import HarvestConfig, harvest; "
            f"harvest(HarvestConfig(out=Path(sys.argv[1]), layer={args.layer}, "
            f"n_tokens={args.rss_tokens}, batch_size={args.batch_size}, dtype='{args.dtype}'))")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "store"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, str(out)], check=True)
        seconds = time.perf_counter() - started
        meta = json.loads((out / "metadata.json").read_text())
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    print(f"[rss] harvest of {args.rss_tokens:,} tokens (resid.{args.layer}, batch {args.batch_size}, "
          f"threads {args.threads or torch.get_num_threads()}): "
          f"peak RSS {peak_gib:.2f} GiB (target < 3 GiB), {seconds:.0f} s wall, "
          f"{meta['last_run']['tokens_per_second']:,.0f} tok/s in the loop, "
          f"{len(meta['shards']['train'])} train + {len(meta['shards']['eval'])} eval shards")


PARTS = {"ratio": part_ratio, "dtype": part_dtype, "load": part_load, "corpus": part_corpus,
         "rss": part_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=20_000, help="tokens per ratio/dtype run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--rss-tokens", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name, part in PARTS.items():
        if args.part in (name, "all") and not (name == "rss" and args.part == "all"):
            part(args)


if __name__ == "__main__":
    main()
