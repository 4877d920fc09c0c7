"""vLLM answers decoded into typed records (wire.decode_vllm_completion) give exactly the
Completion of the general path (loads + parse_completion), and any answer that does not
fit the records is left to the general path."""

from __future__ import annotations

import json

import pytest

from autointerp.db import loads
from autointerp.llm.base import CompletionRequest
from autointerp.llm.wire import decode_vllm_completion, parse_completion, parse_vllm_completion


def row(own: str, alts: list[tuple[str, float]], own_lp: float = -0.25) -> dict:
    out = {"900": {"logprob": own_lp, "rank": 3, "decoded_token": own}}
    for j, (tok, lp) in enumerate(alts):
        out[str(1000 + j)] = {"logprob": lp, "rank": j + 1, "decoded_token": tok}
    return out


def body(**choice) -> bytes:
    rows = [None, row("The", [("A", -1.0)]), row(" cat\t", [("x", -2.0), ("y", -0.5)]),
            row("unknown", [("0", -0.1), ("1", -2.3), ("0", -0.05), ("5", -4)]),  # "0" twice
            {}, row("\n", [("\t", -3.0)]), row("dog\t", []), row("unknown", [("7", -1)], -9)]
    data = {"id": "c", "object": "text_completion", "model": "m",
            "choices": [{"index": 0, "text": "1", "finish_reason": "length",
                         "prompt_logprobs": rows, **choice}],
            "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}}
    return json.dumps(data).encode()


@pytest.mark.parametrize("after", ["", "\t"])
@pytest.mark.parametrize("top", [0, 2])
def test_typed_decoding_equals_the_general_path(after, top):
    logprobs = {"tokens": ["1"], "token_logprobs": [-0.3], "top_logprobs": [{"1": -0.3, "2": -1.5}],
                "text_offset": [0]}
    raw = body(logprobs=logprobs)
    req = CompletionRequest(model="m", prompt="The cat\tunknown", max_tokens=1, prompt_logprobs=4,
                            top_logprobs=top, prompt_logprobs_after=after)
    typed = decode_vllm_completion(raw)
    assert typed is not None
    fast, general = parse_vllm_completion(typed, req), parse_completion(loads(raw), req, "vllm")
    assert fast == general
    assert fast.usage == general.usage and fast.prompt_tokens[3].top[0] == ("0", -0.05)
    assert (fast.tokens is not None) == bool(top)


@pytest.mark.parametrize("raw", [
    b'{"choices": []}',
    b'{"choices": [{"text": null, "prompt_logprobs": null}]}',
    b'{"choices": [{"prompt_logprobs": null}]}',
    body().replace(b'"logprob": -0.25', b'"logprob": null', 1),
    body().replace(b'"decoded_token": "The"', b'"decoded_token": null'),
    body().replace(b'"logprob": -0.25', b'"logprob": -Infinity', 1),
    b'{"choices": [{"text": "1"',
    b'[1, 2]',
])
def test_answers_that_do_not_fit_go_the_general_way(raw):
    assert decode_vllm_completion(raw) is None


def long_body(n_head: int, gap: int) -> bytes:
    """A few-shot-like head (tabs followed by digits), then two slots `gap` rows apart."""
    head = [row(f" w{i}\t" if i % 3 == 0 else f" w{i}", [("5", -0.7), ("2", -1.1)])
            for i in range(n_head)]
    tail = [row(" cat\t", []), row("unknown", [("3", -0.2), ("9", -1.5)]),
            *[row(f" x{i}", [("1", -0.4)]) for i in range(gap)],
            row(" dog\t", []), row("unknown", [("7", -0.3)]), row("\n", []), row(" end\t", [])]
    data = {"choices": [{"text": "1", "finish_reason": "length",
                         "prompt_logprobs": [None, *head, *tail]}],
            "usage": {"prompt_tokens": 1 + n_head + len(tail), "completion_tokens": 1}}
    return json.dumps(data).encode()


@pytest.mark.parametrize("n_head, gap", [(0, 0), (5, 2), (300, 0), (300, 70)])
@pytest.mark.parametrize("slots", [1, 2, 3, 500])
def test_only_the_tail_holding_the_slots_is_decoded(n_head, gap, slots):
    """With prompt_logprobs_slots the Completion is the full one's last positions, from
    the token before the first slot read on; with more slots asked than there are, all."""
    raw = long_body(n_head, gap)
    req = CompletionRequest(model="m", prompt="x", max_tokens=1, prompt_logprobs=2,
                            prompt_logprobs_after="\t", prompt_logprobs_slots=slots)
    full = parse_vllm_completion(decode_vllm_completion(raw), req)
    tail = parse_vllm_completion(decode_vllm_completion(raw, "\t", slots), req)
    after_tab = [i for i in range(1, len(full.prompt_tokens))
                 if full.prompt_tokens[i - 1].token.endswith("\t")]
    start = after_tab[-slots] - 1 if slots <= len(after_tab) else 0
    assert tail.prompt_tokens == full.prompt_tokens[start:]
    assert tail.usage == full.usage and tail.text == full.text
    read = [t.top for t in tail.prompt_tokens if t.top]
    assert ("7", -0.3) in read[-1] and (slots == 1 or ("3", -0.2) in read[-2])
