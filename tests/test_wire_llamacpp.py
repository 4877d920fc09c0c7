"""Wire tests against a real llama.cpp server (llama-cpp-python) on the shipped SmolLM2
GGUF: chat logprobs, echo prompt logprobs after the shift correction against
transformers on the same weights, and the cache counted at the server."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
import torch

from autointerp.db import open_db
from autointerp.harvest.models import load_causal_lm
from autointerp.llm.base import CompletionRequest
from autointerp.llm.cache import CachedClient
from autointerp.llm.openai_client import OpenAIClient

pytestmark = pytest.mark.slow

TEXT = ("The quick brown fox jumps over the lazy dog. Sparse autoencoders find highly "
        "interpretable features in language models, one direction at a time.")
OWN_MAX, OWN_MEAN, ALT_PROB_MAX = 0.35, 0.10, 0.20
"""Allowed |llama.cpp - transformers| gaps: a prompt token's own logprob (max, mean, nats)
and the probability of each top-5 alternative (max). The server runs the Q4_1 weights
with 8-bit quantised activations; transformers runs the same weights dequantised to
float32. Measured over 57 tokens: own max 0.22, mean 0.04; alternatives' probability
max 0.11 (docs/notes/llm.md)."""


TIMEOUT_S = 300
"""llama-cpp-python answers one request at a time, slowly when CPUs are shared."""


def smollm2_client(server, **kwargs) -> OpenAIClient:
    return OpenAIClient(server.url, "smollm2", timeout_s=TIMEOUT_S, **kwargs)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def smollm2():
    return load_causal_lm("smollm2-135m", "cpu", "float32")


def reference_logprobs(lm, text: str) -> tuple[list[int], torch.Tensor]:
    """Token ids and (seq, vocab) log P(next token) from transformers."""
    ids = lm.tokenizer(text)["input_ids"]
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0].float()
    return ids, torch.log_softmax(logits, dim=-1)


def test_chat_top_logprobs_are_sane(llamacpp_server):
    client = smollm2_client(llamacpp_server)
    req = CompletionRequest(model="", messages=(("user", "Count on: 1, 2, 3,"),), max_tokens=6,
                            top_logprobs=5)
    c = run(client.complete(req))
    assert c.tokens and 1 <= len(c.tokens) <= 6 and c.text
    for t in c.tokens:
        values = [lp for _, lp in t.top]
        assert len(t.top) >= 5 and values == sorted(values, reverse=True)
        assert all(lp <= 1e-6 for lp in values) and sum(math.exp(v) for v in values) <= 1.001
        # The server's sampler penalises repeats, so the chosen token need not be the
        # most likely one; it is among the alternatives, with the same logprob.
        assert t.logprob == pytest.approx(dict(t.top).get(t.token, 1.0), abs=1e-4)
    assert "".join(t.token for t in c.tokens) == c.text


def test_echo_logprobs_after_shift_correction_match_transformers(llamacpp_server, smollm2):
    client = smollm2_client(llamacpp_server)  # auto: probes the dialect
    req = CompletionRequest(model="", prompt=TEXT, max_tokens=1, prompt_logprobs=5)
    got = run(client.complete(req)).prompt_tokens
    assert client.capabilities["prompt_logprobs_style"] == "llamacpp"
    ids, ref = reference_logprobs(smollm2, TEXT)
    assert [t.token for t in got] == [smollm2.tokenizer.decode([i]) for i in ids]
    own, alt_prob, top1 = [], [], []
    for i in range(2, len(ids)):  # 0 has no context; 1's row is blanked by the server
        top1.append(got[i].top[0][0] == smollm2.tokenizer.decode([int(ref[i - 1].argmax())]))
        if got[i].logprob is not None:
            own.append(abs(got[i].logprob - float(ref[i - 1, ids[i]])))
        for alt, lp in got[i].top[:5]:
            alt_id = smollm2.tokenizer.encode(alt, add_special_tokens=False)
            if len(alt_id) == 1:
                alt_prob.append(abs(math.exp(lp) - math.exp(float(ref[i - 1, alt_id[0]]))))
    assert len(own) >= 10 and len(alt_prob) > 3 * len(ids)  # own: only when in the top 5
    assert max(own) < OWN_MAX and sum(own) / len(own) < OWN_MEAN and max(alt_prob) < ALT_PROB_MAX
    assert sum(top1) >= 0.9 * len(top1)
    # Without the correction the same response is far off: the shift is real.
    raw = smollm2_client(llamacpp_server, prompt_logprobs_style="echo")
    wrong = run(raw.complete(req)).prompt_tokens
    raw_diffs = [abs(wrong[i].logprob - float(ref[i - 1, ids[i]]))
                 for i in range(2, len(ids)) if wrong[i].logprob is not None]
    assert sum(raw_diffs) / len(raw_diffs) > 10 * sum(own) / len(own)


def wait_for_count(server, expected: int, timeout_s: float = 5) -> int:
    """The access log line lands just after the response: poll briefly."""
    deadline = time.monotonic() + timeout_s
    while server.requests() < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # and make sure no extra request shows up late
    return server.requests()


def test_cached_rerun_makes_no_call_at_the_server(llamacpp_server, tmp_path):
    # No logprobs here: the server builds them in Python over the whole prompt (slow).
    req = CompletionRequest(model="", messages=(("user", "Name a colour."),), max_tokens=3)
    before = wait_for_count(llamacpp_server, 0)
    first = CachedClient(smollm2_client(llamacpp_server), open_db(tmp_path / "c.db"))
    a = run(first.complete(req))
    assert wait_for_count(llamacpp_server, before + 1) == before + 1
    second = CachedClient(smollm2_client(llamacpp_server), open_db(tmp_path / "c.db"))
    b = run(second.complete(req))
    assert wait_for_count(llamacpp_server, before + 2, timeout_s=0.5) == before + 1
    assert (first.calls, second.calls, second.hits) == (1, 0, 1) and a.text == b.text != ""
