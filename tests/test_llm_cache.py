"""The LLM-call cache: keys, round trips, hits without calls, failures never stored,
and two writers of one key."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from autointerp.db import open_db
from autointerp.llm.base import Completion, CompletionRequest, LLMCallError, TokenLogprob
from autointerp.llm.cache import (
    CachedClient,
    completion_from_json,
    completion_to_json,
    request_key,
)

REQ = CompletionRequest(model="m", messages=(("system", "be brief"), ("user", "hi")),
                        top_logprobs=2, candidate_tokens=("0", "1"), stop=("\n",))


class ScriptedClient:
    """A fake backend with enqueued replies (exceptions are raised), counting its calls."""

    def __init__(self, replies, name="fake:m"):
        self.replies = list(replies)
        self.name = name
        self.calls = 0
        self.probes = 0
        self.adopted = None

    def supports(self, feature):
        return True

    async def complete(self, request):
        self.calls += 1
        await asyncio.sleep(0.01)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def probe(self):
        self.probes += 1
        return {"prompt_logprobs_style": "echo", "top_logprobs": True}

    def adopt(self, found):
        self.adopted = found


def completion(text="ok", with_logprobs=True):
    toks = (TokenLogprob("ok", -0.5, (("ok", -0.5), ("no", -1.25))),) if with_logprobs else None
    return Completion(text, toks, None, "stop", {"backend": "fake"})


def test_completion_json_round_trip():
    c = Completion("a b", (TokenLogprob("a", -0.1, (("a", -0.1), ("b", -3.0))),),
                   (TokenLogprob("<s>", None, ()), TokenLogprob("x", -2.5, (("y", -1.0),))),
                   "length", {"k": 1})
    back = completion_from_json(json.loads(json.dumps(completion_to_json(c))))
    assert back == c and back.meta == {"k": 1}
    assert completion_from_json(completion_to_json(Completion("t"))) == Completion("t")


def test_key_covers_client_and_every_request_field():
    base = request_key("fake:m", REQ)
    assert request_key("fake:m", dataclasses.replace(REQ)) == base
    assert request_key("other:m", REQ) != base
    changed = {"model": "m2", "max_tokens": 7, "temperature": 0.5, "top_logprobs": 3,
               "prompt_logprobs": 1, "candidate_tokens": ("0",), "stop": (), "sample_index": 1,
               "prompt_logprobs_after": "\t", "messages": (("user", "hi"),)}
    keys = {request_key("fake:m", dataclasses.replace(REQ, **{f: v})) for f, v in changed.items()}
    assert len(keys) == len(changed) and base not in keys
    # answer_decided only lets a backend end early; it never changes what is read
    assert request_key("fake:m", dataclasses.replace(REQ, answer_decided=r"\.")) == base
    # nor does prompt_logprobs_slots: the positions it lets a backend leave out are unread
    assert request_key("fake:m", dataclasses.replace(REQ, prompt_logprobs_slots=3)) == base
    assert {f.name for f in dataclasses.fields(CompletionRequest)} - set(changed) == {
        "prompt", "answer_decided", "prompt_logprobs_slots"}


def test_second_identical_request_makes_no_call(tmp_path):
    db = open_db(tmp_path / "a.db")
    inner = ScriptedClient([completion()])
    client = CachedClient(inner, db)
    first = asyncio.run(client.complete(REQ))
    second = asyncio.run(client.complete(REQ))
    assert inner.calls == 1 and (client.calls, client.hits, client.failures) == (1, 1, 0)
    assert first == second == completion() and second.meta["cache_hit"] is True
    row = next(db["llm_calls"].rows)
    assert row["client"] == "fake:m" and row["latency_s"] >= 0.01 and row["created_at"]
    assert json.loads(row["request"])["sample_index"] == 0
    # A new process (new client, new connection) also hits.
    again = CachedClient(ScriptedClient([]), open_db(tmp_path / "a.db"))
    assert asyncio.run(again.complete(REQ)).text == "ok" and again.calls == 0


def test_failed_and_incomplete_calls_are_not_cached(tmp_path):
    db = open_db(tmp_path / "a.db")
    inner = ScriptedClient([LLMCallError("boom"), completion(with_logprobs=False), completion()])
    client = CachedClient(inner, db)
    with pytest.raises(LLMCallError):
        asyncio.run(client.complete(REQ))
    assert client.failures == 1 and db["llm_calls"].count == 0
    # Logprobs were asked for and did not come: returned, but a rerun must ask again.
    assert asyncio.run(client.complete(REQ)).tokens is None
    assert db["llm_calls"].count == 0
    assert asyncio.run(client.complete(REQ)).tokens is not None
    assert db["llm_calls"].count == 1 and inner.calls == 3


def test_identical_requests_in_flight_share_one_call(tmp_path):
    inner = ScriptedClient([completion()])
    client = CachedClient(inner, open_db(tmp_path / "a.db"))

    async def many():
        return await asyncio.gather(*[client.complete(REQ) for _ in range(5)])

    assert {c.text for c in asyncio.run(many())} == {"ok"} and inner.calls == 1


def test_two_writers_of_one_key_agree_on_the_first_answer(tmp_path):
    a = CachedClient(ScriptedClient([completion("first")]), open_db(tmp_path / "a.db"))
    b = CachedClient(ScriptedClient([completion("second")]), open_db(tmp_path / "a.db"))

    async def both():
        return await asyncio.gather(a.complete(REQ), b.complete(REQ))

    texts = {c.text for c in asyncio.run(both())}
    assert len(texts) == 1 and a.db["llm_calls"].count == 1


def test_probe_is_cached(tmp_path):
    first = ScriptedClient([])
    found = asyncio.run(CachedClient(first, open_db(tmp_path / "a.db")).probe())
    second = ScriptedClient([])
    again = asyncio.run(CachedClient(second, open_db(tmp_path / "a.db")).probe())
    assert found == again == second.adopted and (first.probes, second.probes) == (1, 0)
