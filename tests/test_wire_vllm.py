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
