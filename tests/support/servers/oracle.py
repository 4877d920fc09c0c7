"""A competent scripted OpenAI-compatible chat endpoint on 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading

from autointerp.scoring.parsing import parse_numbered, parse_records
from tests.support.servers.base import JsonHandler, LocalServer


class OracleEndpoint:
    """A minimal OpenAI-compatible chat endpoint on 127.0.0.1 that answers like a competent
    model: as explainer it names the top-activating token, as simulator it predicts 10 on
    the quoted word. Completions (prompt logprobs) are refused with 404, so the simulator
    runs in json mode. Counts the requests it serves."""

    def __init__(self):
        self.requests = 0
        self.distinct: set[str] = set()
        """Every distinct request body served."""
        self._lock = threading.Lock()
        self._server = LocalServer(self._handler())

    @property
    def url(self) -> str:
        return self._server.url

    def __enter__(self) -> OracleEndpoint:
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()

    @staticmethod
    def answer(messages: list[dict]) -> str:
        system, last = messages[0]["content"], messages[-1]["content"]
        if "summarize" in system:
            pairs = [(float(v), t.strip().lower()) for r in parse_records(last) for t, v in r]
            return f"the word '{max(pairs)[1]}'."
        if "find " not in last:  # the client's capability probe
            return "1"
        explanation = last.splitlines()[0].split(" does is find ", 1)[-1]  # not "feature's"
        words = {a or b for a, b in re.findall(r"'([^']+)'|\"([^\"]+)\"", explanation)}
        return json.dumps([10 if t.strip().lower() in words else 0 for t in parse_numbered(last)[0]])

    def _handler(self):
        server = self

        class Handler(JsonHandler):
            def do_POST(self):
                req = self.read_json()
                with server._lock:
                    server.requests += 1
                    server.distinct.add(json.dumps(req, sort_keys=True))
                if not self.path.endswith("/chat/completions"):
                    return self.send_body(404, {"error": {"message": "no completions here"}})
                choice = {"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": server.answer(req["messages"])}}
                self.send_body(200, {"id": "oracle", "object": "chat.completion", "created": 0,
                                     "model": req["model"], "choices": [choice]})

        return Handler
