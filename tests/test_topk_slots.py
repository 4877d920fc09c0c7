"""An endpoint that returns only its top-k alternatives (llama.cpp's
echo) can leave every digit out at an all-at-once slot. Such a slot is no evidence of
activation (0), counted; the feature fails only when most slots are like that."""

from __future__ import annotations

import asyncio
import math
import re

import pytest

from autointerp.llm.base import Completion, TokenLogprob
from autointerp.scoring.fragments import FeatureFragments
from autointerp.scoring.scorers.simulation import LLMSimulator, SimulationScorer
from autointerp.types import Fragment, SimulationFailed
from tests.support.llm import FakeClient

TOKENS = ("The", " cat", " sat", " on", " the", " mat", ".", " It")


def echo(missing_every: int):
    """Prompt split at tabs and newlines; at every slot '3' and '7' among the top-k, except
    every `missing_every`-th slot, whose alternatives hold no digit."""
    def respond(request):
        out, k = [], 0
        for piece in re.findall(r"\t|\n|[^\t\n]+", request.prompt):
            top = ()
            if piece == "unknown" and out and out[-1].token == "\t":
                k += 1
                top = ((("the", -0.1), ("cat", -2.0)) if k % missing_every == 0 else
                       (("3", math.log(0.5)), ("7", math.log(0.5))))
            out.append(TokenLogprob(piece, -1.0, top))
        return Completion("", prompt_tokens=tuple(out))
    return respond


def simulate(missing_every: int):
    sim = LLMSimulator(FakeClient(respond=echo(missing_every)), "all-at-once", scale_max=9)
    return asyncio.run(sim.simulate("cats", [Fragment(TOKENS, (0.0,) * len(TOKENS))]))


def test_slot_without_a_digit_reads_zero_and_is_counted():
    out = simulate(missing_every=4)  # slots 4 and 8 of 8
    assert out.predictions[0] == pytest.approx((5, 5, 5, 0, 5, 5, 5, 0))
    assert (out.n_no_digit, out.n_slots) == (2, 8)


def test_feature_fails_only_when_most_slots_lack_a_digit():
    with pytest.raises(SimulationFailed, match="ignores the answer format: no digit .* at 8 of 8"):
        simulate(missing_every=1)
    assert simulate(missing_every=2).n_no_digit == 4  # half: still scored


def test_the_share_is_recorded_with_the_score():
    sim = LLMSimulator(FakeClient(respond=echo(missing_every=4)), "all-at-once", scale_max=9)
    frag = Fragment(TOKENS, (0, 1, 0, 0, 1, 0, 0, 0))
    ff = FeatureFragments(0, 20, (frag, frag), (frag,))
    record = asyncio.run(SimulationScorer(sim).score("cats", ff, 1))
    assert record.details["no_answer"] == [4, 16]  # 2 scoring fragments of 8 slots
