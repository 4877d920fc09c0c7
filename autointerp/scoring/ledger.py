"""The failure ledger: everything that went wrong in a run, counted, with its reasons.

A score over fewer features than were sampled must say why. Two kinds of entry:

- events inside a feature that still scored (or not): a prompt whose answer did not
  parse, a retry, a chat answer cut at its token limit, an example dropped because it
  could not be shown safely. Scorers `note()` them into the ledger of the task they run
  in (a context variable, as usage.py's meter), and the row keeps them in `metrics`.
- features lost, one per failed row, by the kind its reason names: refused (the scorer
  could not make a fair test, e.g. too few examples), parse (unusable answers after
  every retry), timeout, call failed (other endpoint errors), explanation.

`summarise_ledger` adds both up for a run; `score`'s summary, `compare`'s table and the
report print `ledger_line` of it.
"""

from __future__ import annotations

import re
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, field

EVENTS = ("parse", "retried", "truncated", "dropped", "no_answer")
"""Per-prompt events: answer did not parse; prompt asked again; chat answer cut at its
token limit; example dropped for safety; verdict or activation slot without a digit."""
LOST = ("refused", "parse", "timeout", "call failed", "explanation", "other", "unfinished")
"""Why a feature's row failed (unfinished: sampled, no row yet: the run was stopped)."""
EVENT_NAMES = {"parse": "unparsed answers", "retried": "retries", "truncated": "truncated",
               "dropped": "dropped for safety", "no_answer": "slots without answer"}

_current: ContextVar[Ledger | None] = ContextVar("autointerp_ledger", default=None)


@dataclass
class Ledger:
    """A running tally (mutable on purpose: it accumulates while answers come back)."""

    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    """(kind: reason with numbers as N) -> count."""

    def note(self, kind: str, reason: str = "", n: int = 1) -> None:
        if n <= 0:
            return
        self.counts[kind] += n
        if reason:
            self.reasons[f"{kind}: {generic(reason)}"] += n

    def to_json(self) -> dict:
        return {"counts": dict(self.counts), "reasons": dict(self.reasons)}

    def merge(self, d: dict | None) -> None:
        for k, v in ((d or {}).get("counts") or {}).items():
            self.counts[k] += v
        for k, v in ((d or {}).get("reasons") or {}).items():
            self.reasons[k] += v


def generic(reason: str) -> str:
    return re.sub(r"\d+", "N", reason)[:200]


def note(kind: str, reason: str = "", n: int = 1) -> None:
    """Count an event in the ledger of the running task (nothing outside a scoring run)."""
    ledger = _current.get()
    if ledger is not None:
        ledger.note(kind, reason, n)


async def tallied(fn, *args):
    """(await fn(*args), its Ledger), counting only the events inside it; a failure carries
    its ledger as `e.ledger` (the retries before it happened)."""
    import asyncio

    ledger = Ledger()

    async def inner():
        _current.set(ledger)
        return await fn(*args)

    try:
        return await asyncio.create_task(inner()), ledger
    except BaseException as e:
        e.ledger = ledger
        raise


def note_completion(request, completion) -> None:
    """A chat answer that stopped at its token limit was cut short (a raw prompt asked for
    one token, as the logprob modes do, stops there by design)."""
    if getattr(request, "messages", None) and getattr(completion, "finish_reason", None) == "length":
        note("truncated", f"answer reached max_tokens {request.max_tokens}")


def lost_kind(reason: str | None) -> str:
    """The kind of a failed row, from its recorded reason."""
    r = (reason or "").lower()
    if "timed out" in r or "timeout" in r:
        return "timeout"
    if r.startswith("llm call failed"):
        return "call failed"
    if r.startswith("explanation"):
        return "explanation"
    if "unusable" in r or "parse" in r or "no usable answer" in r or "without a digit" in r \
            or "ignored the format" in r or "verdict slots" in r:
        return "parse"
    if "examples" in r or "contrast" in r or "separate" in r or "refused" in r or "no tokens" in r:
        return "refused"
    return "other"


@dataclass(frozen=True)
class RunLedger:
    """A run's ledger: features lost by kind, events by kind, the reasons behind both."""

    n_sampled: int
    lost: dict
    events: dict
    reasons: tuple[tuple[str, int], ...]

    @property
    def n_lost(self) -> int:
        return sum(self.lost.values())

    def line(self) -> str:
        """One line, e.g. 'lost 2 of 10 (1 refused, 1 parse); events: 3 retries'."""
        lost = ", ".join(f"{n} {k}" for k, n in self.lost.items() if n)
        events = ", ".join(f"{n} {EVENT_NAMES.get(k, k)}" for k, n in self.events.items() if n)
        head = f"lost {self.n_lost} of {self.n_sampled}" + (f" ({lost})" if lost else "")
        return head + ("; events: " + events if events else "; no retries, truncations or drops")


def summarise_ledger(rows, n_sampled: int) -> RunLedger:
    """rows: dicts with status, reason and metrics (JSON text or dict) of a run's features."""
    from autointerp import db as dbm

    total, lost = Ledger(), Counter()
    for r in rows:
        metrics = r.get("metrics")
        metrics = dbm.loads(metrics) if isinstance(metrics, str) else (metrics or {})
        for entry in metrics.get("ledger") or []:
            total.merge(entry)
        for pair in metrics.get("no_answer") or []:
            if pair:
                total.note("no_answer", "", pair[0])
        if r.get("status") == "failed":
            kind = lost_kind(r.get("reason"))
            lost[kind] += 1
            total.reasons[f"lost, {kind}: {generic(r.get('reason') or '')}"] += 1
    if len(rows) < n_sampled:
        lost["unfinished"] = n_sampled - len(rows)
    return RunLedger(n_sampled, {k: lost[k] for k in LOST if lost[k]},
                     {k: total.counts[k] for k in EVENTS if total.counts[k]},
                     tuple(total.reasons.most_common()))
