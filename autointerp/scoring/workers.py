"""`score --workers N`: one dictionary's features scored by N processes at once.

Against an endpoint the harness's own work is CPU-bound Python (reading each call's
logprob answer, ~350 kB from vLLM for a simulation prompt), so one process uses one
core. With N workers the parent scores every N-th pending feature itself and hands
the others, in N - 1 shards, to processes of a `concurrent.futures` pool (spawned,
not forked: the parent runs an event loop and holds connections). Each worker opens
the same database, builds its own clients (their probes are cached, so it makes no
extra calls), scores its features with its share of --concurrency and writes their
rows as the parent does; SQLite in WAL mode serialises the writes. A request shared by
features in different processes (the same explanation on the same fragment) may be made
by each; the first answer stored is the one every process reads. Setup (self-test,
fragment sets, run rows) and the summary stay in the parent, and the parent's progress
bar counts the workers' features and LLM calls too.
"""

from __future__ import annotations

import asyncio
import gc
import math
import multiprocessing
import os
import queue as queue_module
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autointerp.errors import AutointerpError

if TYPE_CHECKING:
    from autointerp.scoring.fragments import FeatureFragments
    from autointerp.scoring.verdicts import JudgeSettings


def fewer_collections() -> None:
    """Scoring parses a large JSON answer per call, many short-lived objects, and at
    Python's default thresholds the collector rescans everything alive that often
    (bench/throughput.py took about a third less CPU with it off). What is loaded
    before scoring starts is frozen out of the scans and the youngest generation grows."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def concurrency_share(concurrency: int, n_processes: int) -> int:
    """Each process's share of --concurrency."""
    return max(1, math.ceil(concurrency / n_processes))


@dataclass(frozen=True)
class Shard:
    """What a worker needs to score its features and write their rows."""
    db_path: str
    make_llms: Callable
    """Picklable (a module-level function or a partial of one): database -> (explainer,
    simulator, clients), built as the parent built its own."""
    score_features: Callable
    """The pipeline's `score_features`, passed in (pickled by reference) so that this
    module, which the pipeline uses, does not import the pipeline back."""
    scorers: tuple[str, ...]
    judge: JudgeSettings
    run_ids: dict[str, str]
    todo: dict[str, frozenset[int]]
    features: tuple[FeatureFragments, ...]
    n_shown: int
    n_explanations: int
    concurrency: int
    draws: int = 1
    """Seeded draws of each scorer's held-out examples (scorers/draws.py)."""


class Workers:
    """The pool of N - 1 worker processes of one `score` command, started on first use."""

    def __init__(self, n: int, db_path: str, make_llms: Callable):
        self.n, self.db_path, self.make_llms = n, db_path, make_llms
        self._pool: ProcessPoolExecutor | None = None
        self._used = False
        self.done = None

    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self.done = ctx.Queue()
            self._pool = ProcessPoolExecutor(self.n - 1, mp_context=ctx,
                                             initializer=_init, initargs=(self.done,))
        return self._pool

    def start(self, *preload: Callable) -> None:
        """Start the worker processes now, so that their start-up (a Python process and
        the scoring modules, ~0.7 s of CPU each) overlaps the parent's setup. `preload`:
        functions the shards will call; unpickling each imports its module."""
        for _ in range(self.n - 1):
            self.pool().submit(_warm, *preload)

    def close(self, failed: bool = False) -> None:
        """Wait for the workers; after a failure, or when they were given no shard, stop
        them instead (a worker would otherwise finish its whole shard first)."""
        if self._pool is None:
            return
        stop = failed or not self._used  # nothing to finish when they only started up
        if stop:
            # No public way to stop a running task before Python 3.14's terminate_workers.
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                proc.terminate()
        self._pool.shutdown(wait=not stop, cancel_futures=True)
        self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(failed=exc_type is not None)

    def split(self, features: list[FeatureFragments], order: list[int]) -> list[list[FeatureFragments]]:
        """N shards of the pending features, by each feature's place in the run's fixed
        order (so a feature's shard does not depend on what is done already)."""
        place = {f: i for i, f in enumerate(order)}
        shards: list[list[FeatureFragments]] = [[] for _ in range(self.n)]
        for ff in features:
            shards[place[ff.feature] % self.n].append(ff)
        return shards

    async def run(self, shards: list[Shard], feature_done: Callable[[bool], None],
                  counts: dict | None = None) -> None:
        """Score the shards in the pool; each finished feature is reported to feature_done,
        after `counts[shard]` is set to the (cache hits, calls) of that shard's clients."""
        loop = asyncio.get_running_loop()
        self._used = True
        futures = [loop.run_in_executor(self.pool(), run_shard, s) for s in shards]

        expected = sum(len(s.features) for s in shards)

        async def relay() -> None:
            # A worker's last reports can reach the queue just after its result: once
            # every shard is done, wait a little for what is still on its way.
            received, deadline = 0, None
            while received < expected:
                try:
                    while True:
                        shard, failed, hits, calls = self.done.get_nowait()
                        received += 1
                        if counts is not None:
                            counts[shard] = (hits, calls)
                        feature_done(failed)
                except queue_module.Empty:
                    pass
                if deadline is None and all(f.done() for f in futures):
                    deadline = loop.time() + 5
                if deadline is not None and loop.time() > deadline:
                    return
                await asyncio.sleep(0.05 if deadline else 0.2)

        try:
            await asyncio.gather(relay(), *futures)
        except BrokenProcessPool as e:
            raise AutointerpError(f"a --workers process died ({e}); rerun to score the "
                                  f"features it left (rows already written are kept)") from None

    def share(self, concurrency: int) -> int:
        return concurrency_share(concurrency, self.n)


_DONE = None


def _init(done) -> None:
    global _DONE
    _DONE = done
    fewer_collections()


def _warm(*preload: Callable) -> None:
    """The modules a shard needs, imported while the parent sets up (those of `preload`
    as its functions were unpickled)."""
    import autointerp.llm.openai_client  # noqa: F401


def run_shard(shard: Shard) -> int:
    """In a worker: score the shard's features, write their rows; the number scored."""
    return asyncio.run(_score_shard(shard))


async def _score_shard(shard: Shard) -> int:
    from autointerp.db import open_db
    from autointerp.scoring.scorers import make_scorers
    from autointerp.scoring.usage import metered

    db = open_db(shard.db_path)
    explainer, simulator, clients = shard.make_llms(db)
    me = (os.getpid(), uuid.uuid4().hex)

    def done(failed: bool) -> None:
        _DONE.put((me, failed, sum(getattr(c, "hits", 0) for c in clients),
                   sum(getattr(c, "calls", 0) for c in clients)))

    metered(explainer)
    metered(simulator)
    scorers = make_scorers(shard.scorers, simulator, shard.judge, draws=shard.draws)
    for scorer in scorers:
        await scorer.prepare()
    await shard.score_features(shard.features, explainer, scorers, shard.todo, shard.run_ids, db,
                         shard.n_shown, shard.n_explanations, shard.concurrency, done)
    return len(shard.features)
