"""Fault injection against the OpenAI-compatible backend:
a faulty server on 127.0.0.1 fails at chosen rates; calls still complete, waits honour
Retry-After, nothing failed is cached, 401 and unreachable endpoints fail in one line,
and a planted API key never leaks."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import defaultdict
from pathlib import Path

import pytest

from autointerp.db import open_db
from autointerp.llm.base import CompletionRequest, LLMCallError
from autointerp.llm.cache import CachedClient
from autointerp.llm.openai_client import OpenAIClient
from tests.support.servers.faulty import FaultPlan, FaultyServer

SECRET = "sk-test-SECRET-1234"
RATES = {"429": 0.1, "500": 0.06, "503": 0.06, "truncated": 0.06, "slow": 0.04,
         "reset": 0.06, "no_logprobs": 0.05}


def chat(i: int) -> CompletionRequest:
    return CompletionRequest(model="", messages=(("user", f"feature {i}"),), top_logprobs=2)


def gather(client, reqs):
    async def go():
        return await asyncio.gather(*[client.complete(r) for r in reqs], return_exceptions=True)
    return asyncio.run(go())


def retry_waits(server: FaultyServer) -> list[float]:
    """Seconds from each 429 to the next attempt of the same request, seen at the server."""
    by_body = defaultdict(list)
    for r in server.log:
        by_body[r.body_sha].append(r)
    return [b.t - a.t for seq in by_body.values() for a, b in zip(seq, seq[1:], strict=False) if a.fault == "429"]


def test_concurrent_calls_complete_despite_faults(tmp_path):
    plan = FaultPlan(rates=RATES, retry_after_s=0.4, slow_s=1.5, seed=3, max_requests=400,
                     max_seconds=90)
    with FaultyServer(plan) as server:
        inner = OpenAIClient(server.url, "fake", concurrency=8, timeout_s=0.5, max_attempts=8,
                             max_total_s=40)
        client = CachedClient(inner, open_db(tmp_path / "a.db"))
        results = gather(client, [chat(i) for i in range(60)])
    assert [type(r).__name__ for r in results if isinstance(r, Exception)] == []
    assert all(r.text.startswith("answer ") for r in results)
    assert {f for f in RATES if server.count(f) == 0} == set()  # every fault was served
    # An attempt on a pooled connection the server had dropped never reaches it.
    assert inner.attempts >= server.count() > 60
    # Responses without the logprobs asked for surface as tokens=None and are not cached.
    missing = sum(r.tokens is None for r in results)
    assert missing == server.count("no_logprobs") > 0
    rows = list(client.db["llm_calls"].rows)
    assert len(rows) == 60 - missing and all('"tokens":[[' in row["response"] for row in rows)
    waits = retry_waits(server)
    assert len(waits) == server.count("429") and min(waits) >= plan.retry_after_s


def test_retry_after_is_measured_at_the_server():
    with FaultyServer(FaultPlan(script=("429", "ok"), retry_after_s=1.0)) as server:
        client = OpenAIClient(server.url, "fake", max_attempts=3, max_total_s=10)
        assert not isinstance(gather(client, [chat(0)])[0], Exception)
    (wait,) = retry_waits(server)
    assert 1.0 <= wait < 1.0 * 1.1 + 0.5


def test_a_call_that_keeps_failing_is_not_cached(tmp_path):
    with FaultyServer(FaultPlan(script=("503", "500", "503"))) as server:
        client = CachedClient(OpenAIClient(server.url, "fake", max_attempts=3, max_total_s=10),
                              open_db(tmp_path / "a.db"))
        (err,) = gather(client, [chat(0)])
    assert isinstance(err, LLMCallError) and "\n" not in str(err)
    assert str(err).startswith(f"endpoint {server.url} failed after 3 attempts in ")
    assert str(err).endswith(": HTTP 503")
    assert server.count() == 3 and client.failures == 1 and client.db["llm_calls"].count == 0


def test_401_fails_at_once_without_retries(monkeypatch):
    monkeypatch.setenv("AUTOINTERP_TEST_KEY", SECRET)
    with FaultyServer(FaultPlan(api_key="the-right-key")) as server:
        client = OpenAIClient(server.url, "fake", api_key_env="AUTOINTERP_TEST_KEY")
        t0 = time.monotonic()
        (err,) = gather(client, [chat(0)])
        elapsed = time.monotonic() - t0
    assert str(err) == (f"endpoint {server.url} rejected the API key (401) "
                        "from $AUTOINTERP_TEST_KEY")
    assert server.count() == 1 and server.count("401") == 1 and elapsed < 2


def test_other_4xx_fails_at_once():
    with FaultyServer(FaultPlan(script=("400",))) as server:
        (err,) = gather(OpenAIClient(server.url, "fake"), [chat(0)])
    assert isinstance(err, LLMCallError) and "refused the request" in str(err)
    assert "(HTTP 400)" in str(err) and server.count() == 1


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_gives_one_line_within_bounded_time():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    client = OpenAIClient(url, "fake", max_attempts=4, max_total_s=3)
    t0 = time.monotonic()
    (err,) = gather(client, [chat(0)])
    elapsed = time.monotonic() - t0
    assert isinstance(err, LLMCallError) and "\n" not in str(err)
    assert str(err).startswith(f"endpoint {url} failed after ") and "cannot connect" in str(err)
    assert client.attempts >= 2 and elapsed < 5


def test_planted_api_key_never_leaks(tmp_path, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AUTOINTERP_TEST_KEY", SECRET)
    db_path = tmp_path / "cache.db"
    errors = []
    with FaultyServer(FaultPlan(api_key=SECRET, script=("ok", "429", "500", "400"),
                                retry_after_s=0.1)) as server:
        client = CachedClient(OpenAIClient(server.url, "fake", api_key_env="AUTOINTERP_TEST_KEY",
                                           max_attempts=3), open_db(db_path))
        for i in range(3):
            results = gather(client, [chat(i)])
            errors += [str(r) for r in results if isinstance(r, Exception)]
    with FaultyServer(FaultPlan(api_key="another-key")) as server:
        client = OpenAIClient(server.url, "fake", api_key_env="AUTOINTERP_TEST_KEY")
        errors += [str(r) for r in gather(client, [chat(9)])]
    assert client.name.count(SECRET) == 0 and len(errors) == 2  # the 400 and the 401
    assert "bad request from Bearer ***" in errors[0]  # the server echoed it; we scrubbed it
    out, err = capfd.readouterr()
    outputs = {"errors": "\n".join(errors), "logs": caplog.text, "stdout": out, "stderr": err}
    for f in Path(tmp_path).iterdir():  # the database with its WAL and shared-memory files
        outputs[f.name] = f.read_bytes().decode("latin-1")
    assert open_db(db_path)["llm_calls"].count == 2 and len(caplog.records) > 0
    assert {name for name, text in outputs.items() if SECRET in text} == set()


@pytest.mark.parametrize("header, value, expected", [
    ("retry-after-ms", "1500", 1.5), ("Retry-After", "2", 2.0),
    ("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT", None)])
def test_retry_after_headers(header, value, expected):
    from multidict import CIMultiDict  # the type of aiohttp's response headers

    from autointerp.llm.openai_client import _retry_after
    assert _retry_after(CIMultiDict({header: value})) == expected
