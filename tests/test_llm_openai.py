"""The OpenAI-compatible client: parsing of the three prompt-logprob dialects, the
llama.cpp shift correction, probing, the concurrency limit and naming.
The real llama.cpp server is exercised in test_wire_llamacpp.py."""

from __future__ import annotations

import asyncio
import math

import pytest

from autointerp.errors import BadInputError
from autointerp.llm.base import CompletionRequest, LLMCallError
from autointerp.llm.factory import ClientSpec, make_client
from autointerp.llm.inprocess import TransformersClient
from autointerp.llm.openai_client import OpenAIClient
from autointerp.llm.wire import detect_echo_shift, parse_completion
from tests.support.servers.faulty import FaultPlan, FaultyServer

PROMPT = "A b c d e"
TOKENS = ["A", " b", " c", " d", " e"]
# The true next-token distribution at each position i >= 1 (what predicts TOKENS[i]).
DIST = {i: {TOKENS[i]: math.log(0.5), " x": math.log(0.3), " y": math.log(0.1)}
        for i in range(1, 5)}


def buggy_llamacpp_body(shift: int) -> dict:
    """Echo logprobs as llama-cpp-python's server builds them: row i is filled from the
    distribution at position i + shift, then gets its own token's logprob there added."""
    tokens = TOKENS + [" f"]  # the prompt, then the one generated token
    tops, own = [], []
    for i, tok in enumerate(tokens):
        dist = dict(DIST.get(i + shift, {" z": -0.1}))
        dist.setdefault(tok, -9.0)
        tops.append(dist)
        own.append(dist[tok])
    tops[0] = own[0] = None  # "the first token has no logprob"
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    return {"choices": [{"text": PROMPT + " f", "finish_reason": "length", "logprobs": {
        "tokens": tokens, "token_logprobs": own, "top_logprobs": tops, "text_offset": offsets}}]}


def prompt_request(k: int = 3) -> CompletionRequest:
    return CompletionRequest(model="", prompt=PROMPT, max_tokens=1, prompt_logprobs=k)


def test_llamacpp_shift_is_undone():
    got = parse_completion(buggy_llamacpp_body(shift=1), prompt_request(), "llamacpp")
    assert [t.token for t in got.prompt_tokens] == TOKENS and got.text == " f"
    assert got.prompt_tokens[0].logprob is None
    # Position 1's distribution sat in row 0, which the server blanked.
    assert got.prompt_tokens[1].logprob is None and got.prompt_tokens[1].top == ()
    for i in range(2, 5):
        assert got.prompt_tokens[i].logprob == pytest.approx(DIST[i][TOKENS[i]])
        assert dict(got.prompt_tokens[i].top) == pytest.approx(
            {**DIST[i], TOKENS[i - 1]: -9.0})  # plus the artefact: the row's own token
    unshifted = parse_completion(buggy_llamacpp_body(shift=0), prompt_request(), "echo")
    assert [t.logprob for t in unshifted.prompt_tokens[1:]] == pytest.approx(
        [DIST[i][TOKENS[i]] for i in range(1, 5)])


def test_detect_echo_shift():
    def counting(shift):
        words = [str(i) for i in range(1, 21)]
        tops = [None] + [{words[i + shift] if i + shift < 20 else "end": -0.01, "zz": -5.0}
                         for i in range(1, 20)]
        return {"choices": [{"logprobs": {"tokens": words, "top_logprobs": tops}}]}
    assert detect_echo_shift(counting(1)) == 1 and detect_echo_shift(counting(0)) == 0
    assert detect_echo_shift({"choices": [{"logprobs": None}]}) is None


def run(client, reqs):
    async def go():
        return await asyncio.gather(*[client.complete(r) for r in reqs])
    return asyncio.run(go())


def test_vllm_dialect_is_probed_and_parsed():
    with FaultyServer(FaultPlan()) as server:
        client = OpenAIClient(server.url, "fake")
        assert client.supports("prompt_logprobs") is None
        (got,) = run(client, [prompt_request(k=2)])
        assert client.capabilities == {"prompt_logprobs_style": "vllm", "top_logprobs": True}
        assert client.supports("prompt_logprobs") and client.supports("top_logprobs")
        n_after_probe = server.count()
        run(client, [prompt_request(k=2)])
    assert n_after_probe == 3 and server.count() == 4  # two probes + two calls
    tokens = got.prompt_tokens
    assert tokens[0].logprob is None and [t.token for t in tokens[1:]] == TOKENS[1:]
    assert all(t.logprob == -0.25 and t.top[0] == (t.token, -0.25) for t in tokens[1:])
    assert all(len(t.top) == 3 for t in tokens[1:])


def test_concurrency_is_bounded_and_loops_can_change():
    with FaultyServer(FaultPlan(rates={"slow": 1.0}, slow_s=0.3)) as server:
        client = OpenAIClient(server.url, "fake", concurrency=3, timeout_s=5)
        reqs = [CompletionRequest(model="", messages=(("user", str(i)),)) for i in range(9)]
        first = run(client, reqs)
        second = run(client, reqs[:2])  # a second event loop reuses the client
    assert server.max_in_flight == 3 and [c.text for c in second] == [c.text for c in first[:2]]


def test_missing_logprobs_surface_as_none():
    with FaultyServer(FaultPlan(script=("no_logprobs", "ok"))) as server:
        req = CompletionRequest(model="", messages=(("user", "x"),), top_logprobs=2)
        missing, present = asyncio.run(OpenAIClient(server.url, "fake").complete(req)), \
            asyncio.run(OpenAIClient(server.url, "fake").complete(req))
    assert missing.tokens is None and present.tokens[0].top[0][1] == -0.25


def test_name_and_factory(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test-SECRET-1234")
    spec = ClientSpec(backend="openai", model="gpt-x", base_url="http://127.0.0.1:9/v1/",
                      api_key_env="MY_KEY", concurrency=2, timeout_s=5)
    client = make_client(spec)
    assert client.name == "openai:http://127.0.0.1:9/v1 gpt-x" and client.concurrency == 2
    assert isinstance(make_client(ClientSpec(model="some/folder")), TransformersClient)
    for bad in [dict(backend="nope"), dict(backend="openai", base_url="ftp://x"),
                dict(base_url="http://x/v1"), dict(concurrency=0), dict(timeout_s=0),
                dict(api_key_env="not a var"), dict(device="tpu"), dict(model="")]:
        with pytest.raises(BadInputError):
            ClientSpec(**bad)


def test_probe_of_an_endpoint_without_prompt_logprobs():
    with FaultyServer(FaultPlan(script=("400", "400", "ok"))) as server:
        client = OpenAIClient(server.url, "fake")
        found = asyncio.run(client.probe())
        with pytest.raises(LLMCallError, match="returns no prompt logprobs"):
            run(client, [prompt_request()])
    assert found == {"prompt_logprobs_style": "none", "top_logprobs": True}
    assert client.supports("prompt_logprobs") is False and server.count() == 3
