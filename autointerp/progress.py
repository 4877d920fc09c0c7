"""Progress reporting for long steps: rich bars on a terminal, plain lines in a log.

`Progress` is rich's, with one difference: when its console is not a terminal (a
batch job, CI, `nohup`, `make demo > log`), rich would print nothing until the end,
so instead it prints one plain line per task every `interval_s` seconds (and when a
task starts and finishes): done of total, rate, time left.
"""

from __future__ import annotations

import os
import time

from rich.progress import Progress as RichBar
from rich.progress import TaskID

INTERVAL_ENV = "AUTOINTERP_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0
"""Seconds between plain lines: a 16-minute step writes about 30 lines to its log."""


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _amount(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() or x >= 100 else f"{x:,.2f}"


class Progress(RichBar):
    """rich's Progress, printing plain lines at intervals when not on a terminal."""

    def __init__(self, *columns, interval_s: float | None = None, **kwargs):
        super().__init__(*columns, **kwargs)
        self.plain = not self.disable and not self.console.is_terminal
        if self.plain:
            self.disable = True  # rich's live display would only draw once, at the end
        self.interval_s = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)) \
            if interval_s is None else interval_s
        self._lines: dict[TaskID, tuple[float, float]] = {}
        """Per task: (time of its last line, completed when it started)."""

    def add_task(self, description: str, *args, **kwargs) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        if self.plain:
            self._lines[task_id] = (time.monotonic(), self._tasks[task_id].completed)
            self._line(task_id)
        return task_id

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._maybe_line(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_line(task_id)

    def _maybe_line(self, task_id: TaskID) -> None:
        if not self.plain or task_id not in self._lines:
            return
        task = self._tasks[task_id]
        last, _ = self._lines[task_id]
        if task.finished and last >= 0:
            self._line(task_id)
            self._lines[task_id] = (-1.0, self._lines[task_id][1])  # finished: said once
        elif last >= 0 and time.monotonic() - last >= self.interval_s:
            self._line(task_id)

    def _line(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        _, start = self._lines[task_id]
        elapsed = task.elapsed or 0.0
        rate = (task.completed - start) / elapsed if elapsed > 0 else 0.0
        parts = [f"{task.description}: {_amount(task.completed)}"]
        if task.total:
            parts[0] += f"/{_amount(task.total)} ({task.completed / task.total:.0%})"
        if rate > 0:
            parts.append(f"{rate:,.2f}/s")
            if task.total:
                parts.append(f"{_duration(max(task.total - task.completed, 0) / rate)} left")
        parts.append(f"elapsed {_duration(elapsed)}")
        stats = task.fields.get("stats")
        if stats:
            parts.append(str(stats))
        self.console.print(", ".join(parts), markup=False, highlight=False, soft_wrap=True)
        self._lines[task_id] = (time.monotonic(), start)


class RichProgress:
    """The pipeline's progress hooks as a rich bar: done, failed, cache hits, calls/s."""

    def __init__(self, progress: RichBar, clients: list):
        self.progress, self.clients = progress, clients
        self.failed, self.task, self.t0 = 0, None, time.perf_counter()
        self.worker_counts: dict = {}
        """(cache hits, calls) of each `--workers` process's clients, kept up to date by
        scoring/workers.py, so the bar counts every process's calls."""

    def fragments_task(self, total: int):
        task = self.progress.add_task("fragments (2 passes)", total=total, stats="")
        return lambda n: self.progress.advance(task, n)

    def features_task(self, label: str, total: int, already_done: int) -> None:
        self.failed, self.t0 = 0, time.perf_counter()
        self.task = self.progress.add_task(label, total=total, completed=already_done, stats="")

    def feature_done(self, failed: bool) -> None:
        self.failed += failed
        hits = sum(getattr(c, "hits", 0) for c in self.clients)
        calls = sum(getattr(c, "calls", 0) for c in self.clients)
        hits += sum(h for h, _ in self.worker_counts.values())
        calls += sum(n for _, n in self.worker_counts.values())
        rate = calls / max(time.perf_counter() - self.t0, 1e-9)
        self.progress.update(self.task, advance=1, stats=f"failed {self.failed}  cache hits "
                             f"{hits}  calls {calls} ({rate:.1f}/s)")
