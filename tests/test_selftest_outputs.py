"""The output scorer's self-test on SmolLM2-135M (offline, the shipped weights): planted
directions that raise one word (" Paris", " dog") at the middle layer 15 score above the 95th percentile of random
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
    assert paris in up


def test_a_rerun_reads_the_verdict_back(ctx, monkeypatch):
    """The verdict is keyed by model, hook point, prompts and settings: a second run with the
    same ones steers nothing."""
    from types import SimpleNamespace

    from autointerp.scoring import selftest_outputs as so

    settings = OutputSelftestSettings(n_planted=2, n_random=2)
    scorer = SimpleNamespace(name="output", s=STEER)
    first = so.run_output_selftest(scorer, ctx.db, settings=settings, ctx=ctx)
    assert not first.cached
    monkeypatch.setattr(so, "output_selftest", lambda *a, **k: pytest.fail("steered again"))
    again = so.run_output_selftest(scorer, ctx.db, settings=settings, ctx=ctx)
    assert again.cached and again.id == first.id and again.passed == first.passed
    assert so.selftest_id("output", ctx, OutputSelftestSettings(n_planted=2, n_random=3)) \
        != first.id


def test_output_selftest_passes_planted_and_fails_random(ctx):
    settings = OutputSelftestSettings(n_planted=2, n_random=4)
    ok = output_selftest(ctx, settings)
    assert ok.passed, ok.details
    assert [d.feature for d in ok.details] == [" Paris", " dog"]
    assert all(d.right > d.wrong for d in ok.details)
    bad = output_selftest(ctx, OutputSelftestSettings(n_planted=2, n_random=4, planted=False))
    assert not bad.passed
    assert bad.right[0] < ok.right[0]


def test_a_model_no_direction_can_steer_is_a_recorded_fail(monkeypatch):
    """A re-initialised model may not reach the target KL along any random direction: the
    self-test then FAILS with the reason instead of stopping the score run."""
    from types import SimpleNamespace

    from autointerp.scoring import selftest_outputs as so

    words = [(1, " Paris", "Paris"), (2, " dog", "dog")]
    monkeypatch.setattr(so, "_words", lambda ctx, n: words)
    monkeypatch.setattr(so, "_directions", lambda ctx, s, w: [object() for _ in w])
    monkeypatch.setattr(so, "_score_or_nan", lambda ctx, d, tick: float("nan"))
    monkeypatch.setattr("autointerp.causal.steering.random_direction", lambda d, seed: d)
    ctx = SimpleNamespace(model_id={"model": "random-init"}, store=None,
                          loaded=SimpleNamespace(name="m", tokenizer=None), s=SteerSettings())
    res = so.output_selftest(ctx, so.OutputSelftestSettings())
    assert res.passed is False
    assert all("no random direction reached the target KL" in d.failure for d in res.details)
