"""Every client fills `Completion.usage`: the OpenAI-compatible client
from the endpoint's `usage`, the in-process client by counting with its tokenizer, and
the cache stores it, so a cache hit reports the tokens of the original call."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from autointerp.db import open_db
from autointerp.llm.base import Completion, CompletionRequest, Usage
from autointerp.llm.cache import CachedClient, completion_from_json, completion_to_json
from autointerp.llm.inprocess import TransformersClient
from autointerp.llm.openai_client import OpenAIClient
from autointerp.llm.wire import parse_chat, parse_usage
from tests.support.servers.faulty import FaultPlan, FaultyServer

CHAT = CompletionRequest(model="fake", messages=(("system", "be brief"), ("user", "one two three")),
                         max_tokens=8)
PROMPT = CompletionRequest(model="fake", prompt="a b c d e", max_tokens=1, prompt_logprobs=2)


def run(client, reqs):
    async def go():
        return await asyncio.gather(*[client.complete(r) for r in reqs])
    return asyncio.run(go())


def test_openai_client_reads_the_endpoints_usage():
    with FaultyServer(FaultPlan()) as server:
        client = OpenAIClient(server.url, "fake", prompt_logprobs_style="vllm")
        chat, prompt = run(client, [CHAT, PROMPT])
    # The fake server counts words: 2 + 3 in the messages, 2 in "answer <digest>".
    assert chat.usage == Usage(5, 2)
    assert prompt.usage == Usage(5, 1)


def test_usage_missing_or_malformed_is_none():
    body = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}
    assert parse_chat(body, False).usage is None
    assert parse_usage({**body, "usage": {"prompt_tokens": "x"}}) is None
    assert parse_usage({**body, "usage": {"prompt_tokens": 7}}) == Usage(7, 0)


def test_cache_stores_usage_and_hits_keep_the_original_calls(tmp_path):
    db = open_db(tmp_path / "r.db")
    with FaultyServer(FaultPlan()) as server:
        inner = OpenAIClient(server.url, "fake", prompt_logprobs_style="vllm")
        first = run(CachedClient(inner, db), [CHAT])[0]
        again = CachedClient(inner, db)  # a fresh process: only the database is shared
        hit = run(again, [CHAT])[0]
        assert len(server.log) == 1
    assert again.hits == 1 and again.calls == 0 and hit.meta["cache_hit"] is True
    assert first.usage == hit.usage == Usage(5, 2)
    stored = json.loads(next(db.query("select response from llm_calls"))["response"])
    assert stored["usage"] == [5, 2]


def test_rows_cached_before_usage_read_back_without_it():
    row = completion_to_json(Completion("t", usage=Usage(3, 4)))
    assert completion_from_json(row).usage == Usage(3, 4)
    del row["usage"]
    assert completion_from_json(row).usage is None


def test_inprocess_client_counts_with_its_tokenizer(tiny_llama_dir):
    client = TransformersClient(str(tiny_llama_dir), device="cpu", dtype="float32")
    try:
        reqs = [CompletionRequest(model="", prompt="The cat sat on the mat" * (i + 1),
                                  max_tokens=3 + i, top_logprobs=1) for i in range(3)]
        reqs.append(CompletionRequest(model="", messages=(("user", "hello there"),),
                                      max_tokens=5, top_logprobs=1))
        got = run(client, reqs)
        tok = client._lm.tokenizer
    finally:
        client.close()
    for r, c in zip(reqs[:3], got[:3], strict=True):
        assert c.usage.prompt_tokens == len(tok(r.prompt)["input_ids"])
    chat_text = tok.apply_chat_template([{"role": "user", "content": "hello there"}],
                                        add_generation_prompt=True, tokenize=False)
    assert got[3].usage.prompt_tokens == len(tok(chat_text, add_special_tokens=False)["input_ids"])
    for r, c in zip(reqs, got, strict=True):
        assert c.usage.completion_tokens == len(c.tokens) >= 1
        assert c.usage.completion_tokens <= r.max_tokens


def test_openai_client_keeps_alternatives_only_where_asked():
    """vLLM sends alternatives at every prompt position; a request with
    prompt_logprobs_after keeps them only after its marker, so cache rows stay small."""
    req = CompletionRequest(model="fake", prompt="a b c b d e", max_tokens=1,
                            prompt_logprobs=3, prompt_logprobs_after="b")
    with FaultyServer(FaultPlan()) as server:
        client = OpenAIClient(server.url, "fake", prompt_logprobs_style="vllm")
        full, kept = run(client, [dataclasses.replace(req, prompt_logprobs_after=""), req])
    assert [t.token for t in kept.prompt_tokens] == [t.token for t in full.prompt_tokens]
    assert [t.logprob for t in kept.prompt_tokens] == [t.logprob for t in full.prompt_tokens]
    with_top = [t.token for t in kept.prompt_tokens if t.top]
    assert with_top == [" c", " d"] and all(t.top for t in full.prompt_tokens[1:])
