"""Scripted LLM clients for unit tests of parsing and scoring: enqueued replies, and
judges (oracle, random, always 1) that answer through the LLM client contract."""

from __future__ import annotations

import json
import math
import re

import numpy as np

from autointerp.llm.base import Completion, TokenLogprob, Usage


class FakeClient:
    """An LLM client with enqueued replies (str or Completion), then `respond(request)`
    for the rest. Records every request. For unit tests of parsing; the real clients
    are tested against a real model and server."""

    def __init__(self, replies=(), respond=None, name: str = "fake", supports: dict | None = None):
        self.replies = list(replies)
        self.respond = respond
        self.name = name
        self.requests = []
        self._supports = dict(supports or {})

    def supports(self, feature: str):
        return self._supports.get(feature)

    async def complete(self, request):
        from autointerp.llm.base import Completion

        self.requests.append(request)
        if self.replies:
            reply = self.replies.pop(0)
        elif self.respond is not None:
            reply = self.respond(request)
        else:
            raise AssertionError(f"unexpected request to the fake client: {request}")
        return Completion(reply) if isinstance(reply, str) else reply


def example_lines(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^\d+\. (.*)$", text, flags=re.M)]


def answer(values: list[int], p1: list[float], prompt_chars: int) -> Completion:
    """A chat answer '[v, ...]' whose digit tokens carry P(1) = p1 among their alternatives."""
    text = json.dumps(values)
    tokens, k = [], 0
    for piece in re.findall(r"\d|[^\d]+", text):
        top = ()
        if piece.isdigit():
            p = min(max(p1[k], 1e-6), 1 - 1e-6)
            top = (("1", math.log(p)), ("0", math.log(1 - p)))
            k += 1
        tokens.append(TokenLogprob(piece, 0.0, top))
    return Completion(text, tokens=tuple(tokens), usage=Usage(prompt_chars // 4, len(tokens)))


def judge_endpoint(truth: dict, policy: str, seed: int = 0) -> FakeClient:
    """A chat endpoint that judges each example line. truth: (explanation, line) -> label.
    oracle: the true label (P(1) 0.9 / 0.1); random: coin flips, uniform P(1);
    always1: 1 with P(1) 0.9 everywhere."""
    rng = np.random.default_rng(seed)

    def respond(request):
        user = request.messages[-1][1]
        explanation = re.search(r"^Explanation: (.*)$", user, flags=re.M).group(1)
        lines = example_lines(user)
        if policy == "oracle":
            values = [truth[explanation, line] for line in lines]
            p1 = [0.9 if v else 0.1 for v in values]
        elif policy == "random":
            p1 = list(rng.random(len(lines)))
            values = [int(p >= 0.5) for p in p1]
        else:
            values, p1 = [1] * len(lines), [0.9] * len(lines)
        return answer(values, p1, sum(len(c) for _, c in request.messages))

    return FakeClient(respond=respond, name=f"judge-{policy}")
