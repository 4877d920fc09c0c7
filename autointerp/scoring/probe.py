"""Does prompt-logprob mode answer in time at the run's prompt length?

A short probe can pass where the real prompts never come back: llama-cpp-python's
server sorts the whole vocabulary in Python for every prompt token it returns logprobs
for, about 0.5 s per token for 150k-262k vocabularies (Qwen2.5, Gemma 3) and a third of
that for SmolLM2's 49k, so a 394-token detection prompt outlasted a 60 s timeout. Before
`auto` settles on all-at-once, one prompt as long as the run's (an all-at-once
simulation prompt for a full fragment, the longest the run sends) is timed; when it does
not answer within its budget, auto falls back to the chat modes, and says why.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from autointerp.llm.base import CompletionRequest, LLMCallError

FRAGMENT_TOKENS = 64
"""Tokens of a scoring fragment (the store default): the probe's simulation prompt."""
BUDGET_SHARE = 0.5
"""The long probe must answer within this share of the client's timeout..."""
DEFAULT_BUDGET_S = 30.0
"""...or within this, for a client without one (in process)."""


@dataclass(frozen=True)
class LongProbe:
    ok: bool
    seconds: float | None
    """How long the probe took (None: it did not answer within the budget)."""
    budget_s: float
    n_chars: int
    reason: str

    def line(self) -> str:
        took = f"{self.seconds:.1f} s" if self.seconds is not None else "no answer"
        return (f"prompt-logprob probe at the run's prompt length ({self.n_chars:,} characters): "
                f"{took} (budget {self.budget_s:g} s): {self.reason}")


def budget(client) -> float:
    """Seconds the long probe may take: a share of the timeout of the client under any
    wrappers (cache, meter), else the default."""
    while client is not None:
        timeout = getattr(client, "timeout_s", None)
        if timeout:
            return BUDGET_SHARE * float(timeout)
        client = getattr(client, "inner", None)
    return DEFAULT_BUDGET_S


def probe_tokens() -> list[str]:
    """A full fragment of plain tokens for the probe's all-at-once prompt."""
    return [f" word{i % 10}" for i in range(FRAGMENT_TOKENS)]


async def probe_long(client, prompt: str, scale_max: int = 10, k: int = 15) -> LongProbe:
    """Time one full-length all-at-once request (a cached answer: its recorded latency)."""
    limit = budget(client)
    req = CompletionRequest(model="", prompt=prompt, max_tokens=1, prompt_logprobs=k,
                            candidate_tokens=tuple(str(v) for v in range(scale_max + 1)),
                            prompt_logprobs_after="\t", prompt_logprobs_slots=FRAGMENT_TOKENS)
    t0 = time.perf_counter()
    try:
        c = await asyncio.wait_for(client.complete(req), limit)
    except (asyncio.TimeoutError, LLMCallError) as e:
        reason = "too slow at this length, so auto falls back to a chat mode" \
            if isinstance(e, asyncio.TimeoutError) else f"failed ({e}), so auto falls back"
        return LongProbe(False, None, limit, len(prompt), reason)
    took = c.meta.get("latency_s")  # the cache's own timing, the same on a rerun
    took = time.perf_counter() - t0 if took is None else float(took)
    if not c.prompt_tokens:
        return LongProbe(False, took, limit, len(prompt), "no prompt logprobs at this length")
    if took > limit:
        return LongProbe(False, took, limit, len(prompt),
                         "too slow at this length, so auto falls back to a chat mode")
    return LongProbe(True, took, limit, len(prompt), "in time, so auto keeps all-at-once")
