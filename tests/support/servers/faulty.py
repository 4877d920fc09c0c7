"""A small OpenAI-compatible server on 127.0.0.1 that fails on purpose.

Each request draws one fault at the plan's rates (seeded, so a run is
repeatable), or follows `script` for the first requests. Faults: 429 with
Retry-After, 500, 503, a truncated JSON body, an answer slower than the client's
timeout, a connection reset, an answer without the logprobs asked for, and a 400
whose message echoes the request's Authorization header (as careless servers do).
The server serves at most `max_requests` requests and `max_seconds` seconds,
then stops itself. Every request is logged with its time, body hash and fault,
so tests can count calls and measure waits at the server.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from tests.support.servers.base import JsonHandler, LocalServer

FAULTS = ("429", "500", "503", "truncated", "slow", "reset", "no_logprobs", "400")


@dataclass(frozen=True)
class FaultPlan:
    rates: dict[str, float] = field(default_factory=dict)
    """Probability of each fault per request; what is left answers normally."""
    script: tuple[str, ...] = ()
    """Faults (or "ok") for the first requests, in order, before `rates` apply."""
    retry_after_s: float = 1.0
    slow_s: float = 3.0
    api_key: str | None = None
    """When set, a request with another bearer key gets 401."""
    echo_auth: bool = False
    """When set, a 401's message echoes the request's Authorization header."""
    seed: int = 0
    max_requests: int = 2000
    max_seconds: float = 120.0

    def __post_init__(self):
        unknown = (set(self.rates) | set(self.script)) - set(FAULTS) - {"ok"}
        if unknown or sum(self.rates.values()) > 1:
            raise ValueError(f"bad fault plan: {sorted(unknown)} {self.rates}")


@dataclass(frozen=True)
class Record:
    t: float
    path: str
    body_sha: str
    fault: str
    """The fault served, "ok", or "401"."""


def _words(text: str) -> list[str]:
    """The fake 'tokenizer': whitespace-led words."""
    out, cur = [], ""
    for ch in text:
        if ch.isspace() and cur.strip():
            out.append(cur)
            cur = ""
        cur += ch
    return out + ([cur] if cur else [])


def _alts(token: str, k: int) -> list[tuple[str, float]]:
    return [(token, -0.25)] + [(f"alt{j}", -2.0 - j) for j in range(max(0, k - 1))]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """The token bill as OpenAI-compatible servers send it (words stand in for tokens)."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_body(req: dict, with_logprobs: bool, answer=None) -> dict:
    """`answer(messages) -> str` writes the reply; by default a digest of the messages."""
    digest = hashlib.sha256(json.dumps(req["messages"], sort_keys=True).encode()).hexdigest()
    text = answer(req["messages"]) if answer else f"answer {digest[:8]}"
    choice = {"index": 0, "finish_reason": "stop",
              "message": {"role": "assistant", "content": text}}
    if with_logprobs and req.get("logprobs"):
        k = req.get("top_logprobs") or 0
        choice["logprobs"] = {"content": [
            {"token": t, "logprob": -0.25,
             "top_logprobs": [{"token": a, "logprob": lp} for a, lp in _alts(t, k)]}
            for t in _words(text)]}
    prompt = sum(len(_words(m["content"])) for m in req["messages"])
    return {"id": "fake", "object": "chat.completion", "created": 0, "model": req["model"],
            "choices": [choice], "usage": usage(prompt, len(_words(text)))}


def completion_body(req: dict, with_logprobs: bool) -> dict:
    """Answers in vLLM's dialect: `prompt_logprobs` lists {token_id: {...}} per position,
    the prompt's own token first, then the top alternatives."""
    choice = {"index": 0, "finish_reason": "length", "text": " next", "logprobs": None}
    k = req.get("prompt_logprobs") or 0
    if with_logprobs and k:
        rows: list = [None]
        for i, tok in enumerate(_words(req["prompt"])[1:]):
            alts = _alts(tok, k + 1)
            rows.append({str(1000 * i + j): {"logprob": lp, "rank": j + 1, "decoded_token": t}
                         for j, (t, lp) in enumerate(alts)})
        choice["prompt_logprobs"] = rows
    return {"id": "fake", "object": "text_completion", "created": 0, "model": req["model"],
            "choices": [choice], "usage": usage(len(_words(req["prompt"])), 1)}


class FaultyServer:
    """Use as a context manager; `url` is the OpenAI base URL, `log` the requests seen."""

    def __init__(self, plan: FaultPlan, answer=None):
        self.plan = plan
        self.answer = answer
        """Chat replies: `answer(messages) -> str`, e.g. a competent explainer and simulator."""
        self.log: list[Record] = []
        self._lock = threading.Lock()
        self._rng = random.Random(plan.seed)
        self._server = LocalServer(_make_handler(self))
        self._t0 = time.monotonic()
        self.in_flight = 0
        self.max_in_flight = 0
        """The most requests the server held at once (checks the client's semaphore)."""

    @property
    def url(self) -> str:
        return self._server.url

    def __enter__(self) -> FaultyServer:
        self._server.start()
        self._timer = threading.Timer(self.plan.max_seconds, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self.stop()

    def stop(self) -> None:
        self._server.stop()

    def count(self, fault: str | None = None) -> int:
        return sum(1 for r in self.log if fault is None or r.fault == fault)

    def draw(self, path: str, body: bytes, authorized: bool) -> str:
        with self._lock:
            n = len(self.log)
            if n >= self.plan.max_requests:
                fault = "budget"
            elif not authorized:
                fault = "401"
            elif n < len(self.plan.script):
                fault = self.plan.script[n]
            else:
                u, fault = self._rng.random(), "ok"
                for name, rate in sorted(self.plan.rates.items()):
                    if u < rate:
                        fault = name
                        break
                    u -= rate
            self.log.append(Record(time.monotonic() - self._t0, path,
                                   hashlib.sha256(body).hexdigest(), fault))
        if fault == "budget":
            threading.Thread(target=self.stop, daemon=True).start()
        return fault


def _make_handler(server: FaultyServer):
    class Handler(JsonHandler):
        def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
            self.send_body(status, body, headers)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            plan = server.plan
            authorized = plan.api_key is None or \
                self.headers.get("Authorization") == f"Bearer {plan.api_key}"
            fault = server.draw(self.path, body, authorized)
            with server._lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                self._answer(fault, json.loads(body), plan)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. on a slow answer)
            finally:
                with server._lock:
                    server.in_flight -= 1

        def _answer(self, fault: str, req: dict, plan: FaultPlan) -> None:
            error = json.dumps({"error": {"message": f"injected {fault}", "type": fault}}).encode()
            if fault == "401" and plan.echo_auth:
                error = json.dumps({"error": {"message": "invalid key "
                                              + self.headers.get("Authorization", "")}}).encode()
            if fault in ("401", "budget"):
                status = 401 if fault == "401" else 503
                return self._send(status, error)
            if fault == "400":
                echoed = json.dumps({"error": {"message": "bad request from "
                                               + self.headers.get("Authorization", "")}})
                return self._send(400, echoed.encode())
            if fault == "429":
                return self._send(429, error, {"Retry-After": f"{plan.retry_after_s:g}"})
            if fault in ("500", "503"):
                return self._send(int(fault), error)
            if fault == "reset":
                # SO_LINGER 0 makes close() send RST instead of FIN.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return None
            if fault == "slow":
                time.sleep(plan.slow_s)
            if self.path.endswith("/chat/completions"):
                body = chat_body(req, fault != "no_logprobs", server.answer)
            else:
                body = completion_body(req, fault != "no_logprobs")
            out = json.dumps(body).encode()
            if fault == "truncated":
                out = out[: len(out) // 2]
            return self._send(200, out)

    return Handler
