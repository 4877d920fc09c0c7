"""Tokens and calls per feature per scorer.

Every completion carries `usage` (prompt and completion tokens: the endpoint's
`usage`, or counted by the tokenizer in process; None where neither is known). A
`MeteredClient` wraps the client a scorer or explainer calls, and adds each
completion's usage to the meter of the task it runs in (a context variable), so the
pipeline can bill one feature's explanation and each scorer apart while features run
concurrently. Cached answers are billed too: the figures are what the scoring costs,
the same on a rerun that makes no call.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass

from autointerp.scoring.ledger import note_completion

_current: ContextVar[Meter | None] = ContextVar("autointerp_meter", default=None)


@dataclass
class Meter:
    """A running tally (mutable on purpose: it accumulates while calls come back)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unknown: int = 0
    """Calls whose usage the backend did not report: their tokens are not in the totals."""

    def add(self, completion) -> None:
        self.calls += 1
        usage = getattr(completion, "usage", None)
        if usage is None:
            self.unknown += 1
        else:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens

    def columns(self, prefix: str = "") -> dict:
        return {f"{prefix}n_calls": self.calls, f"{prefix}prompt_tokens": self.prompt_tokens,
                f"{prefix}completion_tokens": self.completion_tokens,
                f"{prefix}usage_unknown": self.unknown}


class MeteredClient:
    """The LLMClient contract around another client; everything else passes through."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name

    def supports(self, feature: str):
        return self.inner.supports(feature)

    async def complete(self, request):
        completion = await self.inner.complete(request)
        note_completion(request, completion)
        meter = _current.get()
        if meter is not None:
            meter.add(completion)
        return completion

    def __getattr__(self, name):  # probe, hits, calls ... of the wrapped client
        return getattr(self.inner, name)


def metered(owner) -> None:
    """Wrap `owner.client` (an explainer's or simulator's) once, if it has one."""
    client = getattr(owner, "client", None)
    if client is not None and not isinstance(client, MeteredClient):
        owner.client = MeteredClient(client)


async def measure(fn, *args):
    """(await fn(*args), its Meter), counting only the calls made inside it. The work runs
    in a task of its own, whose copy of the context carries the new meter."""
    meter = Meter()

    async def inner():
        _current.set(meter)
        return await fn(*args)

    try:
        return await asyncio.create_task(inner()), meter
    except BaseException as e:
        e.meter = meter  # a failed scorer's calls were still made and are billed
        raise
