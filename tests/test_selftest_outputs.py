"""The output scorer's self-test on SmolLM2-135M (offline, the shipped weights): planted
directions that raise one word (" Paris", " dog") score above the 95th percentile of random
directions of the same norm, each steered at the same KL; with random directions in their
place it fails. Small settings keep it short (bench/output_null.py runs 200 directions)."""

from __future__ import annotations

import pytest

from autointerp.db import open_db
from autointerp.scoring.selftest_outputs import (
    OutputSelftestSettings,
    output_selftest,
    planted_direction,
    selftest_context,
)
from autointerp.scoring.steered import SteerSettings

STEER = SteerSettings(n_prompts=4, prompt_tokens=8, tolerance=0.05)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    db = open_db(tmp_path_factory.mktemp("st-out") / "r.db")  # random directions computed once
    return selftest_context(STEER, OutputSelftestSettings(), db=db, device="cpu")


def test_planted_direction_promotes_its_word(ctx):
    paris = ctx.loaded.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    up, _ = ctx.promoted(planted_direction(ctx, paris))
    assert up[0] == paris


def test_output_selftest_passes_planted_and_fails_random(ctx):
    settings = OutputSelftestSettings(n_planted=2, n_random=4)
    ok = output_selftest(ctx, settings)
    assert ok.passed, ok.details
    assert [d.feature for d in ok.details] == [" Paris", " dog"]
    assert all(d.right > d.wrong for d in ok.details)
    bad = output_selftest(ctx, OutputSelftestSettings(n_planted=2, n_random=4, planted=False))
    assert not bad.passed
    assert bad.right[0] < ok.right[0]
