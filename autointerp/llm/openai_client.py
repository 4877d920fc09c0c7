"""Any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, Ollama), over aiohttp.

The requests are posted with aiohttp, not the `openai` SDK: the SDK (with httpx) cost
2.4-3.8 ms of CPU per vLLM prompt-logprob answer against 0.4-0.5 ms for aiohttp, which
made the client, not the server, the limit of a scoring run (bench/throughput.py).
The client uses two routes and reads the JSON itself, so the SDK's types bought nothing.

Retries are ours (tenacity): 429 (honouring Retry-After), 5xx,
timeouts, dropped connections and unreadable bodies are retried with exponential
backoff and jitter, bounded in attempts and in total time; 401 and other 4xx
fail at once. The API key is read from the environment at call time and never
appears in a name, a message, a log line or the cache.

Prompt logprobs come in three dialects (see `wire.py`); `auto` probes which
one the endpoint speaks and records it in `capabilities`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import msgspec
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
)

from autointerp.db import loads
from autointerp.llm.base import (
    Completion,
    CompletionRequest,
    EndpointAuthError,
    LLMCallError,
    alternatives_after,
)
from autointerp.llm.wire import (
    PROMPT_STYLES,
    MalformedResponse,
    decode_vllm_completion,
    detect_echo_shift,
    parse_chat,
    parse_completion,
    parse_vllm_completion,
)

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("autointerp.llm")

PLACEHOLDER_KEY = "no-key"
"""Sent when the key's variable is unset: local servers (llama.cpp, vLLM) need none."""

# A counting sequence: each next token is near certain, so whether the echoed
# alternatives at position i predict token i or token i+1 shows the alignment.
PROBE_PROMPT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12"
PROBE_TRIES = 3
"""Asks before a probe concludes that an answering endpoint gives no logprobs: a flaky
server drops them from single answers, and the finding is cached for good."""


class EndpointRefused(LLMCallError):
    """A 4xx other than 401: the request itself is wrong for this endpoint; never retried."""


class _Transient(Exception):
    """A failure worth another attempt."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _retry_after(headers) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms or Retry-After), if any;
    `headers`: a case-insensitive mapping (the response's)."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue  # an HTTP date: rare, fall back to our own backoff
    return None


_encode = msgspec.json.Encoder().encode


async def _close_with_loop(session: aiohttp.ClientSession):
    """Closes `session` when its event loop ends: asyncio.run closes every open async
    generator (loop.shutdown_asyncgens) before it closes the loop, and a generator whose
    owner is dropped earlier is closed on the loop by its finaliser."""
    try:
        yield
    finally:
        await session.close()


def _env_proxy(url: str) -> str | None:
    """The proxy that HTTP(S)_PROXY and NO_PROXY name for `url`, looked up once (aiohttp's
    trust_env looks it up, and reads ~/.netrc, in a thread for every request)."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    if proxy_bypass(parts.netloc):
        return None
    return getproxies().get(parts.scheme)


def _error_message(body: bytes) -> str:
    """What an error answer says: its `error.message` (OpenAI's and vLLM's form), `message`
    or `detail`, else the body's text."""
    try:
        data = loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body.decode("utf-8", "replace")
    if isinstance(data, dict):
        error = data.get("error")
        for found in (error.get("message") if isinstance(error, dict) else error,
                      data.get("message"), data.get("detail")):
            if isinstance(found, str) and found:
                return found
    return body.decode("utf-8", "replace")


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OpenAIClient:
    """An OpenAI-compatible endpoint. `prompt_logprobs_style`: auto | vllm | llamacpp | echo | none."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout_s: float = 60, max_attempts: int = 6,
                 max_total_s: float = 300, prompt_logprobs_style: str = "auto"):
        if prompt_logprobs_style not in PROMPT_STYLES + ("auto",):
            raise ValueError(f"prompt_logprobs_style must be auto or one of {PROMPT_STYLES}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.max_total_s = max_total_s
        self.name = f"openai:{self.base_url} {model}"
        self.capabilities: dict = {}
        """What is known: prompt_logprobs_style, top_logprobs; filled by `probe` or `adopt`."""
        if prompt_logprobs_style != "auto":
            self.capabilities["prompt_logprobs_style"] = prompt_logprobs_style
        self.attempts = 0
        """HTTP attempts made, retries included."""
        self._loop = None

    def supports(self, feature: str) -> bool | None:
        if feature == "prompt_logprobs":
            style = self.capabilities.get("prompt_logprobs_style")
            return None if style is None else style != "none"
        if feature == "top_logprobs":
            return self.capabilities.get("top_logprobs")
        return False

    def adopt(self, capabilities: dict) -> None:
        """Take capabilities found earlier (e.g. a cached probe) instead of probing again."""
        self.capabilities = {**capabilities, **self.capabilities}

    async def _session(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore, asyncio.Lock]:
        # The connection pool and asyncio primitives belong to one event loop; a new
        # loop (another asyncio.run) gets fresh ones, and the pool is closed with its loop.
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            import aiohttp  # here, not at the top: a fully cached rerun never needs it

            self._loop = loop
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=0))  # the semaphore bounds requests
            self._proxy = _env_proxy(self.base_url)
            self._closer = _close_with_loop(self._http)
            await anext(self._closer)
            self._sem = asyncio.Semaphore(self.concurrency)
            self._probe_lock = asyncio.Lock()
        return self._http, self._sem, self._probe_lock

    def _key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    async def complete(self, request: CompletionRequest) -> Completion:
        if request.messages is not None:
            return await self._chat(request)
        style = "none"
        if request.prompt_logprobs:
            style = self.capabilities.get("prompt_logprobs_style") or \
                (await self.probe())["prompt_logprobs_style"]
            if style == "none":
                raise LLMCallError(f"endpoint {self.base_url} returns no prompt logprobs "
                                   f"for {self.model}; use a simulator mode without them")
        return await self._prompt(request, style)

    async def _chat(self, request: CompletionRequest) -> Completion:
        params = {"model": request.model or self.model, "max_tokens": request.max_tokens,
                  "messages": [{"role": r, "content": c} for r, c in request.messages],
                  "temperature": request.temperature, **self._common(request)}
        if request.top_logprobs:
            params.update(logprobs=True, top_logprobs=request.top_logprobs)
        data = await self._post("chat", params)
        return self._parsed(parse_chat, data, request.top_logprobs > 0)

    async def _prompt(self, request: CompletionRequest, style: str) -> Completion:
        params = {"model": request.model or self.model, "prompt": request.prompt,
                  "temperature": request.temperature, **self._common(request),
                  # llama.cpp reads max_tokens=0 as "unlimited": always ask for at least one.
                  "max_tokens": max(1, request.max_tokens)}
        if request.top_logprobs:
            params["logprobs"] = request.top_logprobs
        k = request.prompt_logprobs
        if k and style == "vllm":
            params["prompt_logprobs"] = k
        elif k:
            params.update(echo=True, logprobs=max(k, request.top_logprobs))
        data = await self._post("completions", params, request if k and style == "vllm" else None)
        if isinstance(data, dict):
            c = self._parsed(parse_completion, data, request, style if k else "none")
        else:
            c = self._parsed(parse_vllm_completion, data, request)
        if c.prompt_tokens and request.prompt_logprobs_after and style != "vllm":
            # The endpoint sends alternatives at every prompt position; only those after
            # the marker are read, and dropping the rest keeps the cache rows small (the
            # vLLM readers keep only those already).
            c = replace(c, prompt_tokens=alternatives_after(c.prompt_tokens,
                                                            request.prompt_logprobs_after))
        return c

    @staticmethod
    def _common(request: CompletionRequest) -> dict:
        out: dict = {}
        if request.stop:
            out["stop"] = list(request.stop)
        if request.temperature > 0:  # distinct, reproducible samples where servers honour seeds
            out["seed"] = request.sample_index
        return out

    def _parsed(self, parser, data: dict, *args) -> Completion:
        # _attempt checked the outline; this catches malformed logprob entries.
        try:
            return parser(data, *args)
        except (MalformedResponse, KeyError, IndexError, TypeError, ValueError) as e:
            raise LLMCallError(f"endpoint {self.base_url} sent an unusable response: "
                               f"{type(e).__name__} {_one_line(e, 80)}") from None

    async def _post(self, kind: str, params: dict, vllm: CompletionRequest | None = None):
        """The answer's JSON as a dict; with `vllm` (the request of a vLLM prompt-logprob
        call), the answer is decoded into typed records instead when it fits them
        (wire.decode_vllm_completion)."""
        http, sem, _ = await self._session()
        t0 = time.monotonic()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.max_total_s),
            wait=self._wait, reraise=True, before_sleep=self._log_retry)
        async with sem:
            try:
                async for attempt in retrying:
                    with attempt:
                        return await self._attempt(http, kind, params, vllm)
            except _Transient as e:
                n = attempt.retry_state.attempt_number
                raise LLMCallError(
                    f"endpoint {self.base_url} failed after {n} attempt{'s' * (n > 1)} in "
                    f"{time.monotonic() - t0:.1f}s: {e.reason}") from None
        raise AssertionError("unreachable")

    async def _attempt(self, http: aiohttp.ClientSession, kind: str, params: dict,
                       vllm: CompletionRequest | None):
        import aiohttp  # loaded by _session already

        self.attempts += 1
        key = self._key()
        url = f"{self.base_url}/{'chat/completions' if kind == 'chat' else 'completions'}"
        headers = {"Authorization": f"Bearer {key or PLACEHOLDER_KEY}",
                   "Content-Type": "application/json", "Accept": "application/json"}
        try:
            async with http.post(url, data=_encode(params), headers=headers,
                                 proxy=self._proxy) as response:
                body = await response.read()
        except TimeoutError:
            raise _Transient(f"no answer within {self.timeout_s:g}s") from None
        except aiohttp.ClientConnectorError as e:
            cause = type(e.__cause__ or e.os_error).__name__
            raise _Transient(f"cannot connect ({cause})") from None
        except aiohttp.ClientError as e:  # dropped connection, body cut short
            raise _Transient(f"connection broken ({type(e).__name__})") from None
        log.debug("%s: POST %s: HTTP %d, %d bytes", self.name, url, response.status, len(body))
        if response.status >= 300:
            raise self._status_error(response.status, response.headers, body, key)
        try:
            if vllm and (fast := decode_vllm_completion(
                    body, vllm.prompt_logprobs_after, vllm.prompt_logprobs_slots)) is not None:
                return fast
            data = loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Transient("truncated or invalid JSON body") from None
        choices = data.get("choices") if isinstance(data, dict) else None
        field = "message" if kind == "chat" else "text"
        if not choices or not isinstance(choices[0], dict) or field not in choices[0]:
            raise _Transient(f"response without a choice's {field}")
        return data

    def _status_error(self, status: int, headers, body: bytes, key: str | None) -> Exception:
        if status == 429 or status == 408 or status >= 500:
            return _Transient(f"HTTP {status}", _retry_after(headers))
        if status == 401:
            where = f"from ${self.api_key_env}" if key else f"(${self.api_key_env} is not set)"
            return EndpointAuthError(f"endpoint {self.base_url} rejected the API key (401) {where}")
        detail = _one_line(_error_message(body))
        if key:
            detail = detail.replace(key, "***")
        return EndpointRefused(f"endpoint {self.base_url} refused the request for model "
                               f"{self.model} (HTTP {status}): {detail}")

    def _wait(self, state: RetryCallState) -> float:
        """Retry-After when the server sent one, else exponential backoff with full jitter."""
        exc = state.outcome.exception() if state.outcome else None
        asked = getattr(exc, "retry_after", None)
        if asked is not None:
            return asked * (1 + 0.1 * random.random())
        cap = min(30.0, 0.5 * 2 ** (state.attempt_number - 1))
        return cap * (0.5 + 0.5 * random.random())

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception()
        log.info("%s: %s; retry %d/%d in %.2fs", self.name, getattr(exc, "reason", exc),
                 state.attempt_number, self.max_attempts - 1, state.upcoming_sleep)

    async def probe(self) -> dict:
        """Find which prompt-logprob dialect the endpoint speaks, and whether chat gives
        top logprobs. Results go to `capabilities` (recorded in runs by the caller)."""
        _, _, lock = await self._session()
        async with lock:
            if "prompt_logprobs_style" not in self.capabilities:
                self.capabilities["prompt_logprobs_style"] = await self._probe_prompt_style()
            if "top_logprobs" not in self.capabilities:
                self.capabilities["top_logprobs"] = await self._probe_top_logprobs()
        return dict(self.capabilities)

    async def _probe_prompt_style(self) -> str:
        base = {"model": self.model, "prompt": PROBE_PROMPT, "max_tokens": 1, "temperature": 0}
        for _ in range(PROBE_TRIES):
            data = await self._post_or_none("completions", {**base, "prompt_logprobs": 5})
            if data and data["choices"][0].get("prompt_logprobs"):
                return "vllm"
            echo = await self._post_or_none("completions", {**base, "echo": True, "logprobs": 5})
            shift = detect_echo_shift(echo) if echo else None
            log.info("%s: echo prompt logprobs, shift %s", self.name, shift)
            if shift is not None:
                return {0: "echo", 1: "llamacpp"}[shift]
            if data is None and echo is None:  # completions refused: asking again changes nothing
                break
        return "none"

    async def _probe_top_logprobs(self) -> bool:
        params = {"model": self.model, "messages": [{"role": "user", "content": "Say 1."}],
                  "max_tokens": 2, "temperature": 0, "logprobs": True, "top_logprobs": 2}
        for _ in range(PROBE_TRIES):
            data = await self._post_or_none("chat", params)
            c = parse_chat(data, True) if data else None
            if c is None:
                return False
            if c.tokens:
                return all(t.top for t in c.tokens)
        return False

    async def _post_or_none(self, kind: str, params: dict) -> dict | None:
        """A probe's answer, or None when the endpoint refuses that kind of request."""
        try:
            return await self._post(kind, params)
        except EndpointRefused:
            return None
