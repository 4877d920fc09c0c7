"""A cache around any LLM client, in the `llm_calls` table of the results database.

The key is the sha256 of the canonical JSON of the client's name and every
request field (sample_index included; not answer_decided, see llm/base.canonical), so
a rerun with the same settings makes
zero calls and every cached answer can be traced to its prompt. Only successes
are stored; API keys never reach a request, a client name or this table.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import replace

import msgspec
import sqlite_utils

from autointerp.db import dumps, loads, now
from autointerp.llm.base import (
    Completion,
    CompletionRequest,
    LLMClient,
    TokenLogprob,
    Usage,
    canonical,
)

PROBE_PREFIX = "probe:"
NEG_INF = float("-inf")


def request_key(client_name: str, request: CompletionRequest, text: str | None = None) -> str:
    """sha256 of the canonical JSON of [client name, request]; `text`: the request's
    canonical JSON when the caller has it already (long prompts are slow to encode)."""
    text = dumps(canonical(request)) if text is None else text
    return hashlib.sha256(f"[{dumps(client_name)},{text}]".encode()).hexdigest()


def _tokens_from_json(rows: list | None) -> tuple[TokenLogprob, ...] | None:
    if rows is None:
        return None
    # msgspec and orjson write a non-finite float as null: an alternative's null is a -inf logprob
    # (probability 0); NaN never comes from a softmax.
    # (tuple.__new__ skips the named tuple's argument handling: a rerun from the cache
    # builds a few hundred thousand of these)
    new, make = tuple.__new__, TokenLogprob
    return tuple([new(make, (tok, lp, tuple([(a, NEG_INF if b is None else float(b)) for a, b in top])
                             if top else ())) for tok, lp, top in rows])


def completion_to_json(c: Completion) -> dict:
    """Compact form: one [token, logprob, [[alt, logprob], ...]] triple per position (the
    named tuples themselves, which JSON encoders write as arrays)."""
    return {
        "text": c.text,
        "tokens": c.tokens,
        "prompt_tokens": c.prompt_tokens,
        "finish_reason": c.finish_reason,
        "meta": c.meta,
        "usage": None if c.usage is None else [c.usage.prompt_tokens, c.usage.completion_tokens],
    }


def completion_from_json(d: dict) -> Completion:
    """Rows stored before usage was recorded read back with usage None."""
    usage = d.get("usage")
    return Completion(
        text=d["text"],
        tokens=_tokens_from_json(d.get("tokens")),
        prompt_tokens=_tokens_from_json(d.get("prompt_tokens")),
        finish_reason=d.get("finish_reason"),
        meta=dict(d.get("meta") or {}),
        usage=None if usage is None else Usage(int(usage[0]), int(usage[1])),
    )


_ENCODER = msgspec.json.Encoder()


def _response_text(c: Completion) -> str:
    """The stored row, written by msgspec straight from the named tuples (several times
    faster than building lists for orjson on long logprob lists; the same text), or by
    the standard library for what msgspec refuses."""
    d = completion_to_json(c)
    try:
        return _ENCODER.encode(d).decode()
    except (TypeError, msgspec.EncodeError):
        return dumps(d)


def _incomplete(request: CompletionRequest, c: Completion) -> bool:
    return bool((request.top_logprobs and c.tokens is None)
                or (request.prompt_logprobs and c.prompt_tokens is None))


class CachedClient:
    """Wraps `inner`; same contract. Counters: `hits`, `calls` (made to inner), `failures`."""

    def __init__(self, inner: LLMClient, db: sqlite_utils.Database):
        self.inner = inner
        self.db = db
        self.name = inner.name
        self.hits = 0
        self.calls = 0
        self.failures = 0
        # Identical requests in flight at once share one call instead of racing.
        self._in_flight: dict[str, asyncio.Future] = {}

    def supports(self, feature: str) -> bool | None:
        return self.inner.supports(feature)

    def _lookup(self, key: str) -> dict | None:
        rows = list(self.db.query("select response from llm_calls where key = ?", [key]))
        return loads(rows[0]["response"]) if rows else None

    async def complete(self, request: CompletionRequest) -> Completion:
        text = dumps(canonical(request))
        key = request_key(self.name, request, text)
        rows = list(self.db.query("select response, latency_s from llm_calls where key = ?",
                                  [key]))
        if rows:  # one query: a hit also gives how long the answer took (the probe reads it)
            self.hits += 1
            c = completion_from_json(loads(rows[0]["response"]))  # usage: the original call's
            return replace(c, meta={**c.meta, "cache_hit": True,
                                    "latency_s": rows[0]["latency_s"]})
        if key in self._in_flight:
            self.hits += 1
            return await asyncio.shield(self._in_flight[key])
        fut = asyncio.get_running_loop().create_future()
        self._in_flight[key] = fut
        try:
            result = await self._call_and_store(key, request, text)
            fut.set_result(result)
            return result
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            del self._in_flight[key]

    async def _call_and_store(self, key: str, request: CompletionRequest,
                              text: str) -> Completion:
        self.calls += 1
        t0 = time.perf_counter()
        try:
            result = await self.inner.complete(request)
        except BaseException:
            self.failures += 1
            raise
        latency = time.perf_counter() - t0
        if _incomplete(request, result):
            # Logprobs were asked for and did not come (a flaky endpoint): hand it back so
            # the caller can fail or fall back, but let a rerun ask again.
            return replace(result, meta={**result.meta, "latency_s": latency,
                                         "cache_hit": False, "cached": False})
        # Another process may have stored this key meanwhile: keep the first answer
        # and return what is stored, so a fresh call and a later hit are identical.
        with self.db.conn:
            inserted = self.db.conn.execute(
                "insert or ignore into llm_calls (key, client, request, response, latency_s, "
                "created_at) values (?, ?, ?, ?, ?, ?)",
                [key, self.name, text, _response_text(result), latency, now()],
            ).rowcount
        c = result if inserted else completion_from_json(self._lookup(key))
        return replace(c, meta={**c.meta, "latency_s": latency, "cache_hit": False})

    async def probe(self) -> dict:
        """The inner client's capability probe, cached too, so a cached rerun calls nothing."""
        key = hashlib.sha256(dumps([PROBE_PREFIX + self.name]).encode()).hexdigest()
        stored = self._lookup(key)
        inner_probe = getattr(self.inner, "probe", None)
        if stored is not None:
            adopt = getattr(self.inner, "adopt", None)
            if adopt is not None:
                adopt(stored)
            return stored
        if inner_probe is None:
            return {}
        found = await inner_probe()
        self.db["llm_calls"].insert({
            "key": key, "client": self.name, "request": dumps({"probe": True}),
            "response": dumps(found), "latency_s": 0.0, "created_at": now(),
        }, ignore=True)
        return found
