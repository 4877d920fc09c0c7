"""auto mode probes prompt logprobs at the run's prompt length, times it, and falls back
to a chat mode when the answer does not come in time. The endpoint here is slow the way
llama-cpp-python's server is with a large vocabulary: its prompt-logprob answers cost a
fixed time per prompt token per vocabulary entry (sorting the vocabulary in Python), so a
short probe answers and a full-length prompt does not."""

from __future__ import annotations

import asyncio

from autointerp.db import open_db
from autointerp.llm.base import Completion, TokenLogprob
from autointerp.llm.cache import CachedClient
from autointerp.scoring.scorers.simulation import LLMSimulator
from tests.support.llm import FakeClient

SECONDS_PER_TOKEN_PER_VOCAB = 0.5 / 150_000 / 100
"""0.5 s per prompt token at a 150k vocabulary, as measured against llama-cpp-python's
server, scaled down 100x so that the test takes seconds."""


def slow_server(vocab: int, timeout_s: float = 2.0) -> FakeClient:
    async def complete(request):
        client.requests.append(request)
        if request.prompt is not None:
            words = request.prompt.split()
            await asyncio.sleep(len(words) * vocab * SECONDS_PER_TOKEN_PER_VOCAB)
            return Completion("0", prompt_tokens=tuple(
                TokenLogprob(w, -0.1, ((w, -0.1), ("1", -2.0))) for w in words))
        digits = "0 1 2 3 4 5 6 7 8 9 10"
        return Completion(digits, tokens=tuple(TokenLogprob(t, -0.1, ((t, -0.1), ("1", -3.0)))
                                               for t in digits.split(" ")))

    client = FakeClient(name=f"slow-{vocab}")
    client.complete = complete
    client.timeout_s = timeout_s
    return client


def test_large_vocabulary_falls_back_to_chat_logprobs_and_says_why(tmp_path):
    sim = LLMSimulator(slow_server(vocab=152_000), "auto")
    asyncio.run(sim.prepare())
    assert sim.mode == "logprobs"
    assert not sim.long_probe.ok and sim.long_probe.seconds is None
    assert "did not answer in time at the run's prompt length" in sim.note
    line = sim.long_probe.line()
    assert line.startswith("prompt-logprob probe at the run's prompt length") and "budget 1 s" in line


def test_small_vocabulary_keeps_all_at_once_and_a_rerun_reads_the_timing(tmp_path):
    db = open_db(tmp_path / "r.db")
    sim = LLMSimulator(CachedClient(slow_server(vocab=2_000), db), "auto")
    assert sim.client.inner.timeout_s == 2.0
    asyncio.run(sim.prepare())
    assert sim.mode == "all-at-once" and sim.long_probe.ok
    first = sim.long_probe.seconds
    assert 0 < first < 1
    again = LLMSimulator(CachedClient(slow_server(vocab=2_000), db), "auto")
    asyncio.run(again.prepare())
    assert again.mode == "all-at-once" and again.long_probe.seconds == first  # the stored latency
    assert again.note == sim.note  # the run id does not depend on the timing
