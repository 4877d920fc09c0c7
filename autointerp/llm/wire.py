"""OpenAI-compatible response bodies (plain JSON dicts) -> `Completion`.

Prompt logprobs come in three dialects:

- vllm: `choices[0].prompt_logprobs`, one {token_id: {logprob, rank, decoded_token}}
  per prompt position (None at position 0), the prompt's own token first;
- echo: legacy `echo=True, logprobs=k`; `logprobs.tokens[i]` with
  `token_logprobs[i]` and `top_logprobs[i]` describe position i (OpenAI's own);
- llamacpp: the same arrays, but llama-cpp-python's server (for models that add
  no BOS token, like SmolLM2) fills entry i from the distribution *after* token
  i, i.e. the one that predicts token i+1. So the alternatives for position i
  are `top_logprobs[i-1]`, and token i's own logprob is its entry there. Entry 0
  is blanked by the server ("first token has no logprob"), which loses position
  1's alternatives as well. `detect_echo_shift` finds the offset empirically.

A response without the logprobs that were asked for yields tokens=None, so the
caller can fail that feature with a reason or fall back.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from autointerp.llm.base import Completion, CompletionRequest, TokenLogprob, Usage

PROMPT_STYLES = ("vllm", "llamacpp", "echo", "none")


class MalformedResponse(Exception):
    """A 200 whose body does not have the shape of a completion."""


def _top(alts: dict | None) -> tuple[tuple[str, float], ...]:
    """A {token: logprob} dict as pairs, most likely first."""
    return tuple(sorted(((t, float(lp)) for t, lp in (alts or {}).items()), key=lambda a: -a[1]))


def parse_chat(data: dict, want_logprobs: bool) -> Completion:
    try:
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise MalformedResponse(f"no message in chat response ({type(e).__name__})") from None
    tokens = None
    content = (choice.get("logprobs") or {}).get("content") if want_logprobs else None
    if content:
        tokens = tuple(
            TokenLogprob(t["token"], t.get("logprob"),
                         tuple((a["token"], float(a["logprob"])) for a in t.get("top_logprobs") or ()))
            for t in content)
    return Completion(text, tokens, None, choice.get("finish_reason"), usage=parse_usage(data))


def parse_usage(data: dict) -> Usage | None:
    """The endpoint's token bill (`usage`), or None when it sent none or an unreadable one."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    try:
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError):
        return None
    return Usage(prompt, completion) if prompt >= 0 and completion >= 0 else None


def _legacy_rows(lp: dict) -> list[tuple[str, float | None, dict | None, int | None]]:
    offsets = lp.get("text_offset") or [None] * len(lp["tokens"])
    tops = lp.get("top_logprobs") or [None] * len(lp["tokens"])
    return list(zip(lp["tokens"], lp["token_logprobs"], tops, offsets, strict=True))


def _legacy_tokens(rows) -> tuple[TokenLogprob, ...]:
    return tuple(TokenLogprob(tok, lp, _top(top)) for tok, lp, top, _ in rows)


def _shifted_tokens(rows) -> tuple[TokenLogprob, ...]:
    """Undo llama.cpp's one-position shift: row i-1 holds position i's distribution."""
    out = [TokenLogprob(rows[0][0], None, ())] if rows else []
    for i in range(1, len(rows)):
        dist = rows[i - 1][2]
        token = rows[i][0]
        own = None if dist is None else dist.get(token)
        out.append(TokenLogprob(token, None if own is None else float(own), _top(dist)))
    return tuple(out)


def _vllm_tokens(rows: list, after: str = "") -> tuple[TokenLogprob, ...]:
    """With `after`, alternatives are read only right after a token ending in it (the
    request's prompt_logprobs_after): reading them everywhere is most of a call's cost."""
    out: list[TokenLogprob] = []
    for row in rows:
        if not row:
            out.append(TokenLogprob("", None, ()))
            continue
        own_id, own = next(iter(row.items()))  # vLLM puts the prompt token first, then the top-k
        token = own.get("decoded_token", own_id)
        alts = ()
        if not after or (out and out[-1].token.endswith(after)):
            alts = _top({e.get("decoded_token", tid): e["logprob"] for tid, e in row.items()})
        out.append(TokenLogprob(token, float(own["logprob"]), alts))
    return tuple(out)


def parse_completion(data: dict, request: CompletionRequest, style: str) -> Completion:
    """`style` is how prompt logprobs were asked for ("none": they were not)."""
    try:
        choice = data["choices"][0]
        text = choice.get("text") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise MalformedResponse(f"no text in completion response ({type(e).__name__})") from None
    prompt = request.prompt or ""
    lp = choice.get("logprobs") or None
    tokens = prompt_tokens = None
    if style == "vllm":
        if choice.get("prompt_logprobs"):
            prompt_tokens = _vllm_tokens(choice["prompt_logprobs"], request.prompt_logprobs_after)
        if lp and lp.get("tokens") and request.top_logprobs:
            tokens = _legacy_tokens(_legacy_rows(lp))
    elif style in ("echo", "llamacpp"):
        if text.startswith(prompt):  # echo returns the prompt before the generation
            text = text[len(prompt):]
        if lp and lp.get("tokens"):
            rows = _legacy_rows(lp)
            n_prompt = _n_prompt_rows(rows, prompt)
            fix = _shifted_tokens if style == "llamacpp" else _legacy_tokens
            prompt_tokens = fix(rows[:n_prompt])
            if request.top_logprobs and n_prompt < len(rows):
                tokens = _legacy_tokens(rows[n_prompt:])
    elif lp and lp.get("tokens") and request.top_logprobs:
        tokens = _legacy_tokens(_legacy_rows(lp))
    return Completion(text, tokens, prompt_tokens, choice.get("finish_reason"),
                      usage=parse_usage(data))


def _n_prompt_rows(rows, prompt: str) -> int:
    """Rows that belong to the prompt: by character offset where given, else by text length."""
    if rows and rows[0][3] is not None:
        return sum(1 for *_, off in rows if off < len(prompt))
    n, used = 0, 0
    while n < len(rows) and used < len(prompt):
        used += len(rows[n][0])
        n += 1
    return n


def detect_echo_shift(data: dict) -> int | None:
    """How many positions echoed alternatives lag their token, from a predictable prompt.

    Scores each hypothesis by how often the most likely alternative in row i equals
    token i (shift 0) or token i+1 (shift 1); on a counting sequence the right one
    matches nearly everywhere. None when neither does (no usable echo logprobs)."""
    lp = (data.get("choices") or [{}])[0].get("logprobs") or {}
    tokens, tops = lp.get("tokens") or [], lp.get("top_logprobs") or []
    best = [max(t, key=t.get) if t else None for t in tops]
    n = min(len(tokens), len(best)) - 1
    if n < 8:
        return None
    hits = {s: sum(best[i] is not None and best[i] == tokens[i + s] for i in range(n))
            for s in (0, 1)}
    shift = max(hits, key=hits.get)
    return shift if hits[shift] >= 0.6 * n and hits[shift] > hits[1 - shift] else None


# vLLM's prompt logprobs, decoded straight into typed records: a simulation answer holds
# 16 alternatives at each of ~650 positions (~350 kB), and building, reading and freeing
# them as dicts was most of the client's CPU in bench/throughput.py. The records are not
# tracked by the garbage collector, and the fields no scorer reads are skipped unparsed.
# An answer that does not fit these types (a null logprob, no decoded token, a missing
# field) falls back to `loads` + `parse_completion`, so it fails or parses exactly as
# before.

class _VllmEntry(msgspec.Struct, gc=False):
    logprob: float
    decoded_token: str


_Row = TypeVar("_Row")
"""A position's entry: typed records, or msgspec.Raw where only the tail is decoded."""


class _VllmChoice(msgspec.Struct, Generic[_Row], gc=False):
    text: str
    prompt_logprobs: list[_Row] | None = None
    logprobs: Any = None
    finish_reason: str | None = None


class _VllmBody(msgspec.Struct, Generic[_Row], gc=False):
    choices: list[_VllmChoice[_Row]]
    usage: Any = None


_VllmRow = dict[str, _VllmEntry] | None
_VLLM_DECODER = msgspec.json.Decoder(_VllmBody[_VllmRow])
_TAIL_DECODER = msgspec.json.Decoder(_VllmBody[msgspec.Raw])
_ROWS_DECODER = msgspec.json.Decoder(list[_VllmRow])


def decode_vllm_completion(body: bytes, after: str = "", slots: int = 0):
    """The typed answer, or None when the body is not one (the caller then reads it the
    general way, which also reports what is wrong with it). With `after` and `slots`
    (the request's prompt_logprobs_after and prompt_logprobs_slots), only the positions
    from the one before the last `slots` slots on are decoded into records (the others
    are only scanned; roughly half of a simulation answer's decoding)."""
    try:
        if not (after and slots):
            data = _VLLM_DECODER.decode(body)
        else:
            data = _TAIL_DECODER.decode(body)
            for choice in data.choices[:1]:
                if choice.prompt_logprobs is not None:
                    choice.prompt_logprobs = _tail(choice.prompt_logprobs, after, slots)
    except msgspec.MsgspecError:
        return None
    return data if data.choices else None


def _tail(rows: list, after: str, slots: int) -> list:
    """The rows (still JSON) decoded from the one before the last `slots` slots on; all of
    them when there are fewer slots. Decoded a chunk at a time from the end."""
    part: list = []
    end, found, chunk = len(rows), 0, 2 * slots + 8
    while end > 0:
        start = max(0, end - chunk)
        part = _ROWS_DECODER.decode(b"[" + b",".join(rows[start:end]) + b"]") + part
        # position j is a slot when row j - 1's own token ends with `after`; the first
        # chunk's positions end at its last row, a later chunk's at the row after it
        for j in range(end - start - (end == len(rows)), 0, -1):
            prev = part[j - 1]
            if prev and next(iter(prev.values())).decoded_token.endswith(after):
                found += 1
                if found == slots:
                    return part[j - 1:]
        end = start
    return part


def parse_vllm_completion(data: _VllmBody, request: CompletionRequest) -> Completion:
    """`parse_completion(..., "vllm")` for a typed answer: the same Completion (its last
    positions only, for an answer decoded with `slots`)."""
    choice = data.choices[0]
    prompt_tokens = tokens = None
    if choice.prompt_logprobs:
        after, new = request.prompt_logprobs_after, tuple.__new__
        out: list[TokenLogprob] = []
        prev = None
        for row in choice.prompt_logprobs:
            if not row:
                out.append(new(TokenLogprob, ("", None, ())))
                prev = ""
                continue
            own = next(iter(row.values()))  # the prompt's own token first, then the top-k
            alts = ()
            if not after or (prev is not None and prev.endswith(after)):
                alts = tuple(sorted({e.decoded_token: e.logprob for e in row.values()}.items(),
                                    key=lambda a: -a[1]))
            out.append(new(TokenLogprob, (own.decoded_token, own.logprob, alts)))
            prev = own.decoded_token
        prompt_tokens = tuple(out)
    lp = choice.logprobs
    if isinstance(lp, dict) and lp.get("tokens") and request.top_logprobs:
        tokens = _legacy_tokens(_legacy_rows(lp))
    return Completion(choice.text, tokens, prompt_tokens, choice.finish_reason,
                      usage=parse_usage({"usage": data.usage}))
