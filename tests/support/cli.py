"""Run the real `autointerp` command line in a child process (not a test module).

The reliability tests (crash, concurrency, bad inputs) need real processes: SIGKILL
cannot be simulated in-process, two processes are what share a database, and an
error's one-line promise is about what a user sees on stderr.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.support.servers.base import free_port

REPO = Path(__file__).resolve().parents[2]
# The console script `autointerp` calls autointerp.cli:main; calling it the same way from
# this interpreter needs no installed script and no PATH.
ENTRY = [sys.executable, "-c", "from autointerp.cli import main; main()"]
TEMP_NAME = re.compile(r"^\..+\.tmp\d+$")
"""What store.atomic_write_* and Dictionary.save name a file before renaming it into place."""


def cli_env(**extra: str) -> dict[str, str]:
    """One thread each (the test machine's cores are shared; tiny models run fastest on one),
    offline, no colour codes in stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200",
           "PYTHONPATH": str(REPO)}
    env.pop("AUTOINTERP_DEBUG", None)
    env.update(extra)
    return env


def run_cli(args: list[str], cwd: Path | None = None, timeout: float = 180,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(ENTRY + [str(a) for a in args], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def popen_cli(args: list[str], cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a command; its stdout and stderr go to a temporary file (a pipe nobody reads
    while the test waits could fill and stall the child). Read it with `output(proc)`."""
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(ENTRY + [str(a) for a in args], cwd=cwd, env=env or cli_env(),
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = log
    return proc


def output(proc: subprocess.Popen) -> str:
    """Everything a `popen_cli` process wrote so far."""
    proc.log.seek(0)
    return proc.log.read()


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one `error: ...` line of a failed run; fails the test if the run did not fail
    cleanly: exit code 1 (2 for a value the option parser refuses), no traceback, exactly one error line and nothing after it
    (progress bars drawn before the failure may precede it)."""
    stderr = result.stderr
    assert result.returncode in (1, 2), f"exit {result.returncode}\n{stderr}\n{result.stdout}"
    assert "Traceback" not in stderr and "Traceback" not in result.stdout, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    return errors[0].removeprefix("error: ")


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None,
             every: float = 0.02) -> bool:
    """Poll until predicate() is true; False on timeout or when proc exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return bool(predicate())
        time.sleep(every)
    return False


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    return free_port()


def leftover_files(root: Path) -> list[Path]:
    """Files named like an unfinished atomic write (never read by any loader)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and TEMP_NAME.match(p.name))


def store_arrays(store: Path) -> dict[str, np.ndarray]:
    """Every shard array of a store by relative path, temp-named files excluded."""
    return {str(p.relative_to(store)): np.load(p) for p in sorted(store.rglob("*.npy"))
            if not TEMP_NAME.match(p.name)}


def _files(watched: Path) -> list[Path]:
    """A folder's files, recursively, or a database file and its -wal."""
    if watched.is_dir():
        return [p for p in watched.rglob("*") if p.is_file()]
    return [watched, watched.with_name(watched.name + "-wal")]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # renamed or removed meanwhile
        return 0.0


def written_since(watched: Path, since: float) -> bool:
    """Whether any file at `watched` was modified after wall-clock time `since`."""
    return any(_mtime(p) > since for p in _files(watched))


@dataclass(frozen=True)
class Timing:
    """An uninterrupted run, split at its first write."""

    startup_s: float
    """From launch to the first write (imports, model load; later runs skip finished work)."""
    work_s: float
    """From the first write to the last: the span where a kill can hit a write (the exit
    after the last write can take seconds on a busy machine and is left out)."""


def _launch_until_first_write(args: list[str], watched: Path, timeout: float):
    launched = time.time()
    proc = popen_cli(args)
    wait_for(lambda: written_since(watched, launched), timeout, proc)
    return proc, launched


def timed_run(args: list[str], watched: Path, timeout: float = 300) -> Timing:
    """Run a command to completion, timing its start-up and its work."""
    proc, launched = _launch_until_first_write(args, watched, timeout)
    first_write = time.time()
    assert proc.wait(timeout=timeout) == 0, output(proc)
    last_write = max(_mtime(p) for p in _files(watched))
    return Timing(first_write - launched, max(0.1, last_write - first_write))


def run_and_kill(args: list[str], watched: Path, timing: Timing, fraction: float,
                 timeout: float = 300) -> bool:
    """Start a command and, once it has written its first file under `watched`, let it work
    for `fraction` of the reference run's work time, then SIGKILL it. Counting from the
    first write, not from launch, keeps the kill inside the work however long imports take
    on a busy machine. True when it was still running and so was killed."""
    proc, _ = _launch_until_first_write(args, watched, timeout)
    try:
        proc.wait(timeout=fraction * timing.work_s)
    except subprocess.TimeoutExpired:
        pass
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() in (0, -signal.SIGKILL), output(proc)
    return killed


# --- Small real inputs shared by the reliability tests, built once per session ---------

HARVEST_TOKENS = 100_000
"""Enough for two train shards (a shard is 65,536 tokens) and one eval shard."""


@dataclass(frozen=True)
class Inputs:
    model: Path
    """A tiny random GPT-2 (d_model 32) with its own tokenizer, saved locally."""
    other_model: Path
    """A tiny random Llama of the same width: another model, same d_model."""
    corpus: Path
    """A local .txt corpus, about 100k tokens."""
    store: Path
    """The model's activation store, harvested once through the CLI (the reference)."""
    other_store: Path
    """A small store of other_model."""
    harvest_args: tuple[str, ...]
    """The `harvest` arguments that made `store`, without --out."""
    harvest_timing: Timing
    """How long that harvest took to start and to work."""


def harvest_args(model: Path, corpus: Path, tokens: int) -> list[str]:
    return ["harvest", "--model", str(model), "--layer", "1", "--corpus", str(corpus),
            "--tokens", str(tokens), "--device", "cpu", "--dtype", "float32",
            "--batch-size", "16"]


_INPUTS: list[Inputs] = []


def shared_inputs(tmp_path_factory) -> Inputs:
    if _INPUTS:
        return _INPUTS[0]
    from tests.support.models import build_tiny, corpus_text

    root = tmp_path_factory.mktemp("reliability")
    model, other = build_tiny("gpt2", root / "gpt2"), build_tiny("llama", root / "llama")
    corpus = root / "corpus.txt"
    corpus.write_text(corpus_text(0, n_paragraphs=200), encoding="utf-8")
    args = harvest_args(model, corpus, HARVEST_TOKENS)
    timing = timed_run(args + ["--out", str(root / "store")], root / "store")
    result = run_cli(harvest_args(other, corpus, 6000)
                     + ["--eval-fraction", "0.5", "--out", str(root / "other-store")])
    assert result.returncode == 0, result.stderr
    _INPUTS.append(Inputs(model, other, corpus, root / "store", root / "other-store",
                          tuple(args), timing))
    return _INPUTS[0]


def random_dictionary(store: Path, out: Path, n_features: int, seed: int = 0,
                      d_model: int | None = None) -> Path:
    """A dictionary of random unit directions fit (mean only) to `store`: enough features
    to keep a lexical score run busy for seconds, made without training anything."""
    import torch

    from autointerp.dictionaries.dictionary import Dictionary
    from autointerp.harvest.store import ActivationStore

    acts = ActivationStore(store)
    d = d_model or acts.d_model
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(n_features, d, generator=gen)
    W = W / W.norm(dim=1, keepdim=True)
    mean = acts.train_sample(2048)[:, :d].mean(0)
    meta = {"method": "random-dirs", "model": acts.meta["model"], "hook": acts.meta["hook"],
            "layer": acts.meta["layer"], "store": str(store),
            "store_model_hash": acts.meta["model_hash"]}
    return Dictionary(W, torch.zeros(n_features), W.clone(), mean, meta=meta).save(out)


def run_main(args: list, capsys, monkeypatch=None) -> tuple[int, str, str]:
    """The real `autointerp` entry point, in-process (a child process would spend longer
    importing torch than most commands take): (exit code, stdout, stderr)."""
    from autointerp.cli import main

    saved = sys.argv
    sys.argv = ["autointerp", *map(str, args)]
    if monkeypatch is not None:
        monkeypatch.setenv("COLUMNS", "200")
        monkeypatch.delenv("AUTOINTERP_DEBUG", raising=False)
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = saved
    out = capsys.readouterr()
    return code, out.out, out.err


def check_db(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    migrations = [r[0] for r in con.execute("select name from _migrations")]
    assert len(migrations) == len(set(migrations)) >= 2  # each applied once, by one process
    return con


def llm(dictionary: Path, db: Path, url: str) -> list[str]:
    return ["score", "--dict", str(dictionary), "--db", str(db), "--n-sampled", "20",
            "--explainer", "openai", "--explainer-model", "oracle", "--scoring-backend", "openai",
            "--scoring-model", "oracle", "--scoring-mode", "json", "--base-url", url,
            "--no-selftest", "--concurrency", "8"]
