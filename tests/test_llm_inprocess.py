"""The in-process backend on a tiny random Llama built here: batching changes nothing,
prompt logprobs are a direct forward pass, sampling is reproducible."""

from __future__ import annotations

import asyncio
import re

import pytest
import torch

from autointerp.llm.base import CompletionRequest
from autointerp.llm.inprocess import TransformersClient

DIGITS = tuple(str(i) for i in range(11))


@pytest.fixture(scope="module")
def client(tiny_llama_dir):
    c = TransformersClient(str(tiny_llama_dir), device="cpu", dtype="float32", max_batch=16)
    yield c
    c.close()


def requests() -> list[CompletionRequest]:
    chats = [CompletionRequest(model="", messages=(("user", f"Explain feature {i}" + " please" * i),),
                               max_tokens=4 + 2 * i, top_logprobs=3, candidate_tokens=DIGITS)
             for i in range(4)]
    prompts = [CompletionRequest(model="", prompt="The cat sat on the mat 1 2 3" * (i + 1),
                                 max_tokens=1, prompt_logprobs=2, candidate_tokens=("0", "5"))
               for i in range(3)]
    samples = [CompletionRequest(model="", messages=(("user", "hi"),), temperature=1.0,
                                 sample_index=i, max_tokens=6) for i in range(3)]
    return chats + prompts + samples


def run_together(client, reqs):
    async def go():
        return await asyncio.gather(*[client.complete(r) for r in reqs])
    return asyncio.run(go())


def run_alone(client, reqs):
    async def go():
        return [await client.complete(r) for r in reqs]
    return asyncio.run(go())


def close_tokens(a, b, atol=1e-4):
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(
        x.token == y.token and (x.logprob is None) == (y.logprob is None)
        and (x.logprob is None or abs(x.logprob - y.logprob) < atol)
        and [t for t, _ in x.top] == [t for t, _ in y.top] for x, y in zip(a, b, strict=True))


def test_batching_gives_the_same_results_as_one_at_a_time(client):
    reqs = requests()
    before = client.stats.batches
    together = run_together(client, reqs)
    batches_together = client.stats.batches - before
    alone = run_alone(client, reqs)
    assert batches_together == 1 and client.stats.batches - before == 1 + len(reqs)
    assert {c.meta["batch_size"] for c in together} == {len(reqs)}
    for t, a, r in zip(together, alone, reqs, strict=True):
        assert t.text == a.text and t.finish_reason == a.finish_reason
        assert close_tokens(t.tokens, a.tokens) and close_tokens(t.prompt_tokens, a.prompt_tokens)
        if r.top_logprobs:
            assert len(t.tokens) <= r.max_tokens and {d for d, _ in t.tokens[0].top} >= set(DIGITS)
    assert client.stats.model_s > 0 and client.stats.backend_s >= client.stats.model_s


def test_prompt_logprobs_equal_a_direct_forward_pass(client):
    req = CompletionRequest(model="", prompt="Sparse autoencoders find features 7 8 9",
                            max_tokens=1, prompt_logprobs=3, candidate_tokens=("0", "5", "10"))
    got = run_alone(client, [req])[0].prompt_tokens
    lm = client._lm
    ids = lm.tokenizer(req.prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(lm.model(ids).logits[0].float(), dim=-1)  # (seq, vocab)
    assert len(got) == ids.shape[1] and got[0].logprob is None
    assert "".join(t.token for t in got) == req.prompt
    five = lm.tokenizer.encode("5", add_special_tokens=False)[0]
    for i in range(1, ids.shape[1]):
        assert got[i].logprob == pytest.approx(float(logprobs[i - 1, ids[0, i]]), abs=1e-4)
        top = dict(got[i].top)
        assert max(top.values()) == pytest.approx(float(logprobs[i - 1].max()), abs=1e-4)
        assert top["5"] == pytest.approx(float(logprobs[i - 1, five]), abs=1e-4)
        assert list(top.values()) == sorted(top.values(), reverse=True)


def test_prompt_logprobs_after_reads_only_the_marked_positions(client):
    """With prompt_logprobs_after, the positions right after the marker carry exactly what
    a full read-out gives them; every other position keeps its token alone."""
    full = CompletionRequest(model="", prompt="a 7\tb 8\tc 9 d\te", max_tokens=1,
                             prompt_logprobs=2, candidate_tokens=("0", "5"))
    marked = CompletionRequest(**{**full.__dict__, "prompt_logprobs_after": "\t"})
    a, b = (c.prompt_tokens for c in run_alone(client, [full, marked]))
    assert [t.token for t in a] == [t.token for t in b]
    after = [i for i in range(1, len(a)) if a[i - 1].token.endswith("\t")]
    assert len(after) == 3
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if i in after:
            assert y.logprob == pytest.approx(x.logprob, abs=1e-4) and y.top
            assert [n for n, _ in y.top] == [n for n, _ in x.top]
        else:
            assert y.logprob is None and y.top == ()


def test_chat_requests_use_the_chat_template(client):
    req = CompletionRequest(model="", messages=(("user", "hello"),), max_tokens=0,
                            prompt_logprobs=1)
    got = run_alone(client, [req])[0]
    expected = client._lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}], add_generation_prompt=True, tokenize=False)
    assert "".join(t.token for t in got.prompt_tokens) == expected and got.text == ""


def test_sampling_is_seeded_by_request_and_sample_index(client):
    reqs = [CompletionRequest(model="", messages=(("user", "hi"),), temperature=1.5,
                              sample_index=i, max_tokens=8) for i in range(4)]
    first = [c.text for c in run_together(client, reqs)]
    assert first == [c.text for c in run_alone(client, reqs[::-1])][::-1]
    assert len(set(first)) > 1
    greedy = CompletionRequest(model="", messages=(("user", "hi"),), max_tokens=8)
    assert len({c.text for c in run_together(client, [greedy] * 3)}) == 1


def test_stop_and_length(client):
    free = run_alone(client, [CompletionRequest(model="", prompt="1 2 3", max_tokens=6)])[0]
    assert free.finish_reason in ("length", "stop")
    stop = next(free.text[i:i + 2] for i in range(1, len(free.text) - 1)
                if "\ufffd" not in free.text[i:i + 2])  # not a partly decoded byte
    cut = run_alone(client, [CompletionRequest(model="", prompt="1 2 3", max_tokens=6,
                                               stop=(stop,))])[0]
    assert stop and cut.text == free.text[: free.text.find(stop)] and cut.finish_reason == "stop"


def test_generation_ends_once_the_answer_is_decided(client):
    """answer_decided ends generation after the token whose text first matches it; the
    text is not cut, and neither the cache key nor the sampling seed depends on it."""
    from autointerp.llm.cache import request_key
    from autointerp.llm.decoding import request_seed

    for sampled in (0.0, 0.9):
        plain = CompletionRequest(model="", prompt="1 2 3", max_tokens=8, temperature=sampled,
                                  top_logprobs=1)
        full = run_alone(client, [plain])[0]
        k = next(i for i in range(1, len(full.tokens))
                 if "".join(t.token for t in full.tokens[:i]).strip())
        pattern = re.escape("".join(t.token for t in full.tokens[:k]).strip()[-1])
        decided = CompletionRequest(**{**plain.__dict__, "answer_decided": pattern})
        early = run_alone(client, [decided])[0]
        assert early.finish_reason == "stop" and full.text.startswith(early.text)
        assert len(early.tokens) <= k < len(full.tokens)
        assert re.search(pattern, early.text)
        assert request_key("c", plain) == request_key("c", decided)
        assert request_seed(plain) == request_seed(decided)
