import asyncio
import json
import math
import re

import pytest

from autointerp.errors import BadInputError
from autointerp.llm.base import Completion, LLMCallError, TokenLogprob
from autointerp.scoring.parsing import parse_numbered, parse_records
from autointerp.scoring.scorers.simulation import LLMSimulator, all_at_once_prompt, chat_messages
from autointerp.types import Fragment, SimulationFailed
from tests.support.llm import FakeClient

TOKENS = ("The", " cat", "<end>", "\n", " ignore the above", "\t", " sat", "\\n")


def fragment(tokens=TOKENS):
    return Fragment(tokens, tuple(float(i % 3) for i in range(len(tokens))))


def run(coro):
    return asyncio.run(coro)


def simulator(client, mode):
    sim = LLMSimulator(client, mode, scale_max=10)
    return sim


def test_unknown_mode_is_a_one_line_user_error():
    with pytest.raises(BadInputError, match="unknown simulator mode 'fast'"):
        LLMSimulator(FakeClient(), "fast")


@pytest.mark.parametrize("answer", [
    "[0, 1, 2, 3, 4, 5, 6, 10]",
    "Sure! Here are the activations:\n[0, 1, 2, 3, 4, 5, 6, 10]\nHope this helps.",
    "```json\n[0,1,2,3,4,5,6,10]\n```",
])
def test_json_mode_reads_the_array_through_prose(answer):
    sim = simulator(FakeClient([answer]), "json")
    out = run(sim.simulate("cats", [fragment()]))
    assert out.predictions == ((0, 1, 2, 3, 4, 5, 6, 10),) and out.mode == "json"


@pytest.mark.parametrize("bad, reason", [
    ("[0, 1, 2]", "expected 8 values, got 3"),                       # missing tokens
    ("[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]", "expected 8 values, got 10"),  # extra tokens
    ("[0, 1, 2, 3, 4, 5, 6, 11]", "out of range"),
    ("[0, 1, 2, 3, 4, 5, 6, -1]", "out of range"),
    ("[0, 1, 2, 3, 4, 5, 6, 2.5]", "not an integer"),
    ("I think the cat is important.", "no JSON array"),
])
def test_json_mode_retries_bad_answers_then_fails_with_reason(bad, reason):
    client = FakeClient([bad] * 3)
    with pytest.raises(SimulationFailed, match=re.escape(reason)):
        run(simulator(client, "json").simulate("cats", [fragment()]))
    assert [r.sample_index for r in client.requests] == [0, 1, 2]  # new cache key each try
    assert client.requests[0].temperature == 0 and client.requests[1].temperature > 0


def test_json_mode_recovers_on_retry():
    client = FakeClient(["[0, 1]", "[1, 1, 1, 1, 0, 0, 0, 0]"])
    out = run(simulator(client, "json").simulate("cats", [fragment()]))
    assert out.predictions == ((1, 1, 1, 1, 0, 0, 0, 0),)


def _chat_tokens(text, dists):
    """Tokens of `text` split at digits; at the i-th number, alternatives from dists[i]."""
    pieces = re.findall(r"\d+|[^\d]+", text)
    out, k = [], 0
    for p in pieces:
        top = ()
        if p.isdigit():
            top = tuple((f" {v}" if j % 2 else str(v), math.log(pr))
                        for j, (v, pr) in enumerate(dists[k].items()))
            k += 1
        out.append(TokenLogprob(p, 0.0, top))
    return tuple(out)


def test_logprobs_mode_takes_expected_values_over_digit_tokens():
    text = "[0, 5, 0, 0, 0, 0, 0, 10]"
    dists = [{0: 0.5, 2: 0.5}, {5: 0.8, 10: 0.2}] + [{}] * 5 + [{10: 1.0}]
    reply = Completion(text, tokens=_chat_tokens(text, dists))
    client = FakeClient([reply])
    out = run(simulator(client, "logprobs").simulate("cats", [fragment()]))
    # Positions without digit alternatives fall back to the written integer.
    assert out.predictions[0] == pytest.approx((1.0, 6.0, 0, 0, 0, 0, 0, 10.0))
    assert client.requests[0].top_logprobs > 0


def test_logprobs_mode_without_logprobs_fails_not_silently():
    client = FakeClient(["[0, 1, 2, 3, 4, 5, 6, 10]"] * 3)
    with pytest.raises(SimulationFailed, match="no token logprobs"):
        run(simulator(client, "logprobs").simulate("cats", [fragment()]))
    # Asked again, the same request (never cached without its logprobs), before failing.
    assert len(client.requests) == 3 and len(set(client.requests)) == 1


def _echo(values_at_slots):
    """A fake prompt-logprobs backend: the prompt split into tokens the way a BPE would
    (tab, word pieces, newline); at each placeholder a digit distribution."""
    def respond(request):
        assert request.prompt is not None and request.prompt_logprobs > 0
        pieces = re.findall(r"\t|\n|[^\t\n]+?(?=\t|\n|$)", request.prompt)
        out, k, prev = [], 0, ""
        for p in pieces:
            parts = ["unk", "nown"] if p == "unknown" else [p]  # a split placeholder
            for j, part in enumerate(parts):
                top = ()
                if prev == "\t" and p == "unknown" and j == 0:
                    v = values_at_slots[k]
                    top = (("0", math.log(0.5)), (str(v), math.log(0.5)), ("cat", math.log(0.1)))
                    k += 1
                out.append(TokenLogprob(part, -1.0, top))
                prev = part
        return Completion("", prompt_tokens=tuple(out))
    return respond


def test_all_at_once_aligns_one_prediction_per_token():
    values = [1, 2, 3, 4, 5, 6, 7, 8]
    client = FakeClient(respond=_echo(values))
    out = run(simulator(client, "all-at-once").simulate("cats", [fragment()]))
    assert out.predictions[0] == pytest.approx(tuple(v / 2 for v in values))
    req = client.requests[0]
    assert req.candidate_tokens == tuple(str(v) for v in range(11)) and req.prompt_logprobs > 0


def test_all_at_once_misalignment_fails_with_reason():
    def respond(request):
        return Completion("", prompt_tokens=(TokenLogprob("Feature", None, ()),
                                             TokenLogprob("\t", -1.0, ()),
                                             TokenLogprob("unknown", -1.0, (("3", -0.1),))))
    with pytest.raises(SimulationFailed, match="found 1 activation slots .* for 8 tokens"):
        run(simulator(FakeClient(respond=respond), "all-at-once").simulate("x", [fragment()]))


def test_simulator_prompts_survive_hostile_corpus_text():
    f = fragment()
    prompt = all_at_once_prompt("cats\nand <end> dogs", f.tokens)
    blocks = parse_records(prompt)
    assert [t for t, _ in blocks[-1]] == list(TOKENS)
    assert all(v == "unknown" for _, v in blocks[-1])
    assert all(v.isdigit() for b in blocks[:-1] for _, v in b)  # the few-shot examples
    assert "cats and <end> dogs" in prompt  # the explanation stays on one line
    messages = chat_messages("cats", f.tokens)
    assert parse_numbered(messages[-1][1]) == [list(TOKENS)]
    for role, content in messages[1:-1]:
        if role == "assistant":
            assert isinstance(json.loads(content), list)


def _probe_client(prompt_tokens=None, chat_tokens=None, prompt_supported=None):
    def respond(request):
        if request.prompt is not None:
            if prompt_tokens is None:
                raise LLMCallError("no prompt logprobs here")
            return Completion("", prompt_tokens=tuple(TokenLogprob(t, -1.0, (("0", -1.0),))
                                                      for t in prompt_tokens))
        text = "".join(chat_tokens or ["0 1 2"])
        return Completion(text, tokens=None if chat_tokens is None else tuple(
            TokenLogprob(t, -1.0, ((t, -1.0),)) for t in chat_tokens))
    return FakeClient(respond=respond, supports={"prompt_logprobs": prompt_supported})


@pytest.mark.parametrize("prompt_tokens, chat_tokens, mode, scale", [
    (["0", " 1", " 9", " 10"], None, "all-at-once", 10),
    (["0", " 1", " 9", " 1", "0"], None, "all-at-once", 9),     # "10" is two tokens
    (None, ["0", " 1", " 10"], "logprobs", 10),
    (None, ["0", " 1", " 1", "0"], "logprobs", 9),
    (None, None, "json", 10),
])
def test_auto_mode_probes_and_records_its_choice(prompt_tokens, chat_tokens, mode, scale):
    sim = LLMSimulator(_probe_client(prompt_tokens, chat_tokens), "auto")
    run(sim.prepare())
    assert (sim.mode, sim.scale_max) == (mode, scale)
    assert sim.settings()["mode"] == mode and "auto" in sim.note
    assert ("0..9" in sim.note) == (scale == 9)


def test_forced_mode_the_endpoint_cannot_do_is_a_user_error():
    with pytest.raises(BadInputError, match="no prompt logprobs"):
        run(LLMSimulator(_probe_client(None, None), "all-at-once").prepare())


def test_all_at_once_on_a_real_model_matches_a_direct_computation(tiny_llama_dir):
    """The in-process backend and the slot finder against logits computed here: at each
    `unknown` the expected value over the digit tokens, renormalised."""
    import torch

    from autointerp.harvest.models import load_causal_lm
    from autointerp.llm.inprocess import TransformersClient

    lm = load_causal_lm(str(tiny_llama_dir), "cpu")
    sim = LLMSimulator(TransformersClient(str(tiny_llama_dir), device="cpu", loaded=lm), "auto")
    tokens = ("The", " cat", "\t", " 10", "<end>", " sat")
    out = run(sim.simulate("cats", [fragment(tokens)]))
    assert sim.mode == "all-at-once" and len(out.predictions[0]) == len(tokens)

    prompt = all_at_once_prompt("cats", tokens, sim.scale_max)
    tok = lm.tokenizer
    enc = tok(prompt, return_offsets_mapping=True)
    slot_chars = [m.start() + 1 for m in re.finditer(r"\tunknown", prompt)]
    starts = [s for s, _ in enc["offset_mapping"]]
    positions = [starts.index(c) for c in slot_chars]  # token index where each slot starts
    digit_ids = [tok.encode(str(v), add_special_tokens=False) for v in range(sim.scale_max + 1)]
    assert all(len(ids) == 1 for ids in digit_ids)
    with torch.no_grad():
        logits = lm.model(torch.tensor([enc["input_ids"]])).logits[0].float()
    expected = []
    for p in positions:
        probs = torch.softmax(logits[p - 1], -1)[[ids[0] for ids in digit_ids]]
        expected.append(float((probs / probs.sum() * torch.arange(len(probs))).sum()))
    assert out.predictions[0] == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow
def test_simulator_modes_end_to_end_on_llamacpp(llamacpp_server, tmp_path):
    """auto picks all-at-once from llama.cpp's echo (shift-corrected by the client) and
    reads one expected value per token; logprobs mode asks for top logprobs and either
    returns aligned expected values or fails with the parse reason, never misaligned."""
    from autointerp.db import open_db
    from autointerp.llm.cache import CachedClient
    from autointerp.llm.openai_client import OpenAIClient

    db = open_db(tmp_path / "w.db")
    client = CachedClient(OpenAIClient(llamacpp_server.url, "smollm2", timeout_s=300), db)
    tokens = ("The", " cat", " sat", " on", " the", " mat", ".")
    frag = Fragment(tokens, (0, 0, 0, 0, 10, 0, 0))
    sim = LLMSimulator(client, "auto")
    out = run(sim.simulate("the word 'the'", [frag]))
    assert sim.mode == "all-at-once" and sim.scale_max == 9  # SmolLM2 writes 10 as "1", "0"
    assert len(out.predictions[0]) == len(tokens)
    assert all(0 <= v <= 9 for v in out.predictions[0])
    assert len({round(v, 6) for v in out.predictions[0]}) > 1  # read per slot, not one value

    chat = LLMSimulator(client, "logprobs", scale_max=9, retries=1)  # llama.cpp on CPU is slow
    try:
        got = run(chat.simulate("the word 'the'", [frag]))
    except SimulationFailed as e:
        assert re.search(r"expected 7 values|no JSON array|out of range|not an integer", str(e))
    else:
        assert len(got.predictions[0]) == len(tokens)
    asked = [json.loads(r["request"]) for r in db.query("select request from llm_calls")]
    assert any(r.get("messages") and r["top_logprobs"] > 0 for r in asked)
