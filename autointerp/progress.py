"""The score pipeline's progress hooks drawn as a rich bar (used by `score` and `demo`)."""

from __future__ import annotations

import time

from rich.progress import Progress


class RichProgress:
    """The pipeline's progress hooks as a rich bar: done, failed, cache hits, calls/s."""

    def __init__(self, progress: Progress, clients: list):
        self.progress, self.clients = progress, clients
        self.failed, self.task, self.t0 = 0, None, time.perf_counter()

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
        rate = calls / max(time.perf_counter() - self.t0, 1e-9)
        self.progress.update(self.task, advance=1, stats=f"failed {self.failed}  cache hits "
                             f"{hits}  calls {calls} ({rate:.1f}/s)")
