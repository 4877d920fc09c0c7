"""The in-process prefix cache: prompts that share the explainer's or
simulator's instructions and few-shot examples run only their own tail, and give the
same text and logprobs as running every prompt in full."""

from __future__ import annotations

import asyncio

import pytest

from autointerp.llm.base import CompletionRequest
from autointerp.llm.inprocess import TransformersClient
from autointerp.llm.prefix_cache import MIN_PREFIX_TOKENS, SPLIT_GAP, group_by_prefix
from autointerp.scoring.explain import explainer_messages
from autointerp.scoring.scorers.simulation import all_at_once_prompt
from autointerp.types import Fragment
from tests.support.models import build_tiny

DIGITS = tuple(str(i) for i in range(11))
WORDS = "the cat sat on a mat while it rained in London and she said 12 apples".split()


def fragment(seed: int, n: int = 12) -> Fragment:
    tokens = tuple(" " + WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(n))
    return Fragment(tokens, tuple(float((seed + i) % 4) for i in range(n)))


def simulator_request(seed: int) -> CompletionRequest:
    prompt = all_at_once_prompt(f"the word {WORDS[seed % len(WORDS)]}", fragment(seed).tokens)
    return CompletionRequest(model="", prompt=prompt, max_tokens=1, prompt_logprobs=2,
                             candidate_tokens=DIGITS, prompt_logprobs_after="\t")


def explainer_request(seed: int) -> CompletionRequest:
    return CompletionRequest(model="", messages=explainer_messages([fragment(seed), fragment(seed + 1)]),
                             max_tokens=5, top_logprobs=2)


def run(client, reqs):
    async def go():
        return await asyncio.gather(*[client.complete(r) for r in reqs])
    return asyncio.run(go())


def assert_same(a, b, atol=1e-4):
    assert a.text == b.text and a.finish_reason == b.finish_reason and a.usage == b.usage
    for x, y in ((a.prompt_tokens, b.prompt_tokens), (a.tokens, b.tokens)):
        assert (x is None) == (y is None)
        if x is None:
            continue
        assert [t.token for t in x] == [t.token for t in y]
        for s, t in zip(x, y, strict=True):
            assert (s.logprob is None) == (t.logprob is None)
            assert s.logprob is None or s.logprob == pytest.approx(t.logprob, abs=atol)
            assert [n for n, _ in s.top] == [n for n, _ in t.top]
            assert [v for _, v in s.top] == pytest.approx([v for _, v in t.top], abs=atol)


def compare(path, batches, **options):
    """Each batch through a client with the prefix cache (and `options`) and one without;
    both agree."""
    cached = TransformersClient(str(path), device="cpu", dtype="float32", **options)
    full = TransformersClient(str(path), device="cpu", dtype="float32", prefix_cache=False)
    try:
        for reqs in batches:
            for a, b in zip(run(cached, reqs), run(full, reqs), strict=True):
                assert_same(a, b)
        return cached.prefixes
    finally:
        cached.close()
        full.close()


def test_same_results_with_and_without_the_prefix_cache(tiny_llama_dir):
    first = [simulator_request(i) for i in range(3)] + [explainer_request(i) for i in range(2)]
    first.append(CompletionRequest(model="", prompt="an unrelated short prompt", max_tokens=3,
                                   top_logprobs=2, prompt_logprobs=1))
    second = [simulator_request(i) for i in range(3, 6)] + [explainer_request(5)]
    prefixes = compare(tiny_llama_dir, [first, second, second[:1]])
    # The first batch computes the simulator's and the explainer's prefixes, the later
    # ones reuse them (a lone request has nothing to share within its batch, but a
    # kept prefix serves it too).
    assert prefixes.misses == 2 and prefixes.hits == 3


def test_chunked_prefill_gives_the_same_results(tiny_llama_dir):
    """Tails run in chunks of 7 columns (left padding and prefix included) agree with one
    pass over whole prompts."""
    reqs = [simulator_request(i) for i in range(3)] + [explainer_request(i) for i in range(2)]
    reqs.append(CompletionRequest(model="", prompt="a short prompt, shorter than the rest",
                                  max_tokens=3, top_logprobs=2, prompt_logprobs=1))
    compare(tiny_llama_dir, [reqs, reqs[:1]], prefill_chunk=7)


def short_request(seed: int) -> CompletionRequest:
    """Within the 128 positions of the tiny GPT-2 and GPT-NeoX: a shared 30-word start."""
    shared = " ".join(WORDS[j % len(WORDS)] for j in range(30))
    return CompletionRequest(model="", prompt=f"{shared} {WORDS[seed]} {WORDS[seed + 1]} {seed}",
                             max_tokens=3, prompt_logprobs=2, top_logprobs=2)


def test_a_new_feature_extends_the_shared_start_of_a_kept_prefix(tiny_llama_dir):
    """One feature's simulator prompts share the examples with another's but not the
    explanation: the second feature's prefix reuses the first's start and runs the rest."""
    def one_feature(explanation_seed: int) -> list[CompletionRequest]:
        explanation = f"the word {WORDS[explanation_seed]}"
        return [CompletionRequest(model="", prompt=all_at_once_prompt(explanation, fragment(s).tokens),
                                  max_tokens=1, prompt_logprobs=2, candidate_tokens=DIGITS)
                for s in (10, 11)]
    prefixes = compare(tiny_llama_dir, [one_feature(0), one_feature(1), one_feature(2)])
    assert prefixes.misses == 3 and prefixes.extended == 2


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_other_families_agree(family, tmp_path):
    path = build_tiny(family, tmp_path / family)
    reqs = [short_request(i) for i in range(3)]
    prefixes = compare(path, [reqs, [short_request(i) for i in range(4, 6)]])
    assert prefixes.misses == 1 and prefixes.hits == 1
    # and with the tails prefilled a few columns at a time
    compare(path, [reqs], prefill_chunk=3)


def test_grouping_keeps_a_tail_token_and_a_minimum_prefix():
    shared = list(range(100, 104 + MIN_PREFIX_TOKENS))
    ids = [shared + [1, 2], [7, 8, 9], shared + [3], shared]
    groups = sorted((sorted(members), n) for members, n in group_by_prefix(ids))
    # Row 3 is the prefix itself: the group's prefix leaves it its last token.
    assert groups == [([0, 2, 3], len(shared) - 1), ([1], 0)]
    assert group_by_prefix([shared[:10] + [1], shared[:10] + [2]]) == [([0], 0), ([1], 0)]


def test_grouping_gives_each_feature_its_longer_prefix():
    """Two features' prompts share the instructions; each feature's also share its
    explanation: one group per feature, each with its longer prefix."""
    base = list(range(100, 100 + MIN_PREFIX_TOKENS))
    a, b = base + [1] * SPLIT_GAP, base + [2] * SPLIT_GAP
    ids = [a + [5, 6], b + [5], a + [7], b + [8, 9]]
    assert sorted(group_by_prefix(ids)) == [([0, 2], len(a)), ([1, 3], len(b))]
    # A smaller drop keeps the rows together, with the shorter shared prefix.
    c = a[:-SPLIT_GAP + 1] + [3] * (SPLIT_GAP - 1)
    assert group_by_prefix([a + [5], a + [6], c + [7]]) == [([0, 1, 2], len(a) - SPLIT_GAP + 1)]
