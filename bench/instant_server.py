"""An OpenAI-compatible server on 127.0.0.1 that answers at once (for bench/throughput.py).

It speaks vLLM's dialect, so the harness takes the path a vLLM server would send it
down: `prompt_logprobs` (the all-at-once simulator) with the prompt's own token first
and then `k` alternatives at every prompt position, the digits "0".."10" among them;
chat answers with `logprobs.content` when asked; `usage` on every answer. Its
"tokenizer" cuts text into whitespace-led words and ends a token at a tab, so the
simulator's `token<TAB>unknown` slots line up as they do with a real tokenizer.
Answers are joined from JSON pieces built once: the server should cost little next to
the harness it measures, and reports its own CPU seconds at /stats.

    python bench/instant_server.py --port 0     # prints the URL, serves until killed
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.support
from tests.support.servers.base import JsonHandler, LocalServer  # noqa: E402

TOKEN = re.compile(r"\s*\S*\t|\s*\S+|\s+")
"""Whitespace-led words; a tab ends a token, so `token<TAB>unknown` gives a slot."""
DIGITS = [str(d) for d in range(11)]
FILLERS = [f" w{j}" for j in range(64)]


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


VARIANTS = 7
"""Alternatives come in this many orders, chosen by position, so simulated activations and
verdicts vary and a run's scores differ from feature to feature (the summary then runs
its bootstrap, as a real run does)."""


def _alternatives(k: int, variant: int) -> str:
    """The k alternatives after the own token, as a JSON fragment."""
    alts = (DIGITS + FILLERS)[:k]
    order = list(range(k))
    random.Random(variant).shuffle(order)  # which alternative is how likely
    return "".join(f', "{1000 + j}": {{"logprob": {-0.5 - 0.25 * order[j]}, '
                   f'"rank": {order[j] + 2}, "decoded_token": {json.dumps(t)}}}'
                   for j, t in enumerate(alts))


_ALTS: dict[int, list[str]] = {}
_ROWS: dict[tuple, str] = {}
"""A row's JSON text after its token id, by (k, token, variant): prompts share most of
their tokens, so the server mostly joins strings it has built before."""


def _row(k: int, i: int, t: str) -> str:
    key = (k, t, (3 * i + len(t)) % VARIANTS)
    rest = _ROWS.get(key)
    if rest is None:
        if k not in _ALTS:
            _ALTS[k] = [_alternatives(k, v) for v in range(VARIANTS)]
        alts = _ALTS[k]
        rest = _ROWS[key] = (f'{{"logprob": -0.25, "rank": 1, "decoded_token": '
                             f'{json.dumps(t)}}}{alts[key[2]]}}}')
    return f'{{"9{i}": {rest}'


def prompt_logprobs_json(prompt: str, k: int) -> tuple[str, int]:
    """vLLM's `prompt_logprobs` list (None at position 0) as JSON text, and the token count."""
    toks = tokens(prompt)
    return f"[null,{','.join(_row(k, i, t) for i, t in enumerate(toks[1:]))}]", len(toks)


def completion_answer(req: dict) -> str:
    k = int((req.get("extra_body") or {}).get("prompt_logprobs") or req.get("prompt_logprobs") or 0)
    rows, n = prompt_logprobs_json(req["prompt"], k) if k else ("null", len(tokens(req["prompt"])))
    head = {"id": "instant", "object": "text_completion", "created": 0, "model": req["model"],
            "usage": usage(n, 1)}
    choice = '{"index": 0, "text": " 0", "finish_reason": "length", "logprobs": null, ' \
             f'"prompt_logprobs": {rows}}}'
    return json.dumps(head)[:-1] + f', "choices": [{choice}]}}'


def chat_text(messages: list[dict]) -> str:
    """What the model says: the probe's digits repeated, else a short explanation."""
    last = messages[-1]["content"]
    if last.startswith("Repeat exactly:"):
        return last.split(":", 1)[1].strip()
    digest = hashlib.sha256(last.encode()).hexdigest()
    return f"words and phrases about topic {digest[:6]}"


def chat_answer(req: dict) -> str:
    text = chat_text(req["messages"])
    choice = {"index": 0, "finish_reason": "stop",
              "message": {"role": "assistant", "content": text}}
    if req.get("logprobs"):
        k = req.get("top_logprobs") or 0
        choice["logprobs"] = {"content": [
            {"token": t, "logprob": -0.1, "top_logprobs": [{"token": t, "logprob": -0.1}] +
             [{"token": a, "logprob": -3.0} for a in FILLERS[:max(0, k - 1)]]}
            for t in tokens(text)]}
    n_prompt = sum(len(tokens(m["content"])) for m in req["messages"])
    return json.dumps({"id": "instant", "object": "chat.completion", "created": 0,
                       "model": req["model"], "choices": [choice],
                       "usage": usage(n_prompt, len(tokens(text)))})


class Handler(JsonHandler):
    served = 0

    def _send(self, body: str, status: int = 200) -> None:
        self.send_body(status, body)

    def do_GET(self) -> None:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self._send(json.dumps({"requests": Handler.served, "cpu_s": ru.ru_utime + ru.ru_stime}))

    def do_POST(self) -> None:
        req = self.read_json()
        Handler.served += 1
        if self.path.endswith("/chat/completions"):
            self._send(chat_answer(req))
        elif self.path.endswith("/completions"):
            self._send(completion_answer(req))
        else:
            self._send('{"error": {"message": "not found"}}', 404)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="Port on 127.0.0.1 (0: any free one).")
    args = ap.parse_args()
    # A backlog as uvicorn's: bursts of connections.
    server = LocalServer(Handler, args.port, backlog=1024)
    print(server.url, flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
