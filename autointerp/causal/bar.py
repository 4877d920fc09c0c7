"""A progress bar for causal runs that shows forward passes and passes per second (plain
lines at intervals when not on a terminal, autointerp/progress.py)."""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from autointerp.progress import Progress


class PassBar:
    """One task at a time; `counter()` returns the forward passes so far. `tick(0)`
    refreshes the pass count without advancing (a long greedy threshold)."""

    def __init__(self, progress: Progress | None):
        self.progress = progress

    @contextmanager
    def task(self, label: str, total: int, counter):
        if self.progress is None:
            yield lambda: None
            return
        t0, n0 = time.perf_counter(), counter()
        task = self.progress.add_task(label, total=total, stats="")

        def tick(advance: int = 1):
            n = counter() - n0
            rate = n / max(time.perf_counter() - t0, 1e-9)
            self.progress.update(task, advance=advance, stats=f"{n} forward passes ({rate:.1f}/s)")

        try:
            yield tick
        finally:
            self.progress.update(task, completed=total)


def pass_progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[stats]}"),
                    console=Console(stderr=True))
