"""The simulator self-test separates a perfect simulator from useless ones, and caches."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from autointerp.db import open_db
from autointerp.harvest.store import ActivationStore
from autointerp.scoring.planted import PLANTED, plant, text_fragments
from autointerp.scoring.selftest import (
    SelftestSettings,
    derangement,
    load_selftest,
    run_selftest,
    selftest,
)
from autointerp.types import Fragment, Simulation, SimulationFailed
from tests.support.data import make_store

WORDS = ["cat", "river", "house", "light", "stone", "garden", "letter", "window"]
NAMES = ["Alice", "London", "Paris", "Bob", "Mary"]


def sentences(n: int, seed: int = 0) -> list[str]:
    """Seeded English-like sentences with every planted feature somewhere in them."""
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[rng.integers(len(xs))]  # noqa: E731
    templates = [
        lambda: f"{pick(NAMES)} saw the {pick(WORDS)} and the {pick(WORDS)}.",
        lambda: f"In {rng.integers(1000, 2000)} she kept {rng.integers(2, 99)} of them, he said.",
        lambda: f'"The {pick(WORDS)} of {pick(NAMES)}," they wrote (page {rng.integers(1, 9)}).',
        lambda: f"We found a {pick(WORDS)}: it was [{pick(WORDS)}]; you knew it.",
    ]
    return [templates[rng.integers(len(templates))]() for _ in range(n)]


def word_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A real (word-level) HF tokenizer built locally over the test text."""
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    vocab = {"[UNK]": 0}
    for text in texts:
        for word, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real activation store whose 40 eval fragments are the sentences above."""
    text = " ".join(sentences(600))
    tok = word_tokenizer([text])
    ids = np.array(tok(text)["input_ids"][: 40 * 64])
    assert len(ids) == 40 * 64
    path = tmp_path_factory.mktemp("store")
    make_store(path, torch.randn(256, 8), torch.randn(len(ids), 8), ids, tokenizer=tok)
    return ActivationStore(path)


def planted_by_explanation():
    return {f.explanation: f for f in PLANTED}


class OracleSimulator:
    """Predicts exactly what the explanation says: a perfect simulator."""

    name, mode = "oracle", "oracle"

    def __init__(self):
        self.calls = 0
        self.features = planted_by_explanation()

    async def simulate(self, explanation, fragments):
        self.calls += 1
        f = self.features[explanation]
        return Simulation(tuple(f.activations(fr.tokens) for fr in fragments), self.name, self.mode)


class NoiseSimulator:
    name, mode = "noise", "oracle"

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)

    async def simulate(self, explanation, fragments):
        return Simulation(tuple(tuple(self.rng.uniform(0, 10, len(fr.tokens)).tolist())
                                for fr in fragments), self.name, self.mode)


class ConstantSimulator:
    name, mode = "constant", "oracle"

    async def simulate(self, explanation, fragments):
        return Simulation(tuple((3.0,) * len(fr.tokens) for fr in fragments), self.name, self.mode)


class FlakyOracle(OracleSimulator):
    """The oracle, except that it fails on commas."""

    name = "flaky"

    async def simulate(self, explanation, fragments):
        if explanation == "commas":
            raise SimulationFailed("misaligned after 3 tries")
        return await super().simulate(explanation, fragments)


def test_oracle_passes(store, tmp_path):
    sim = OracleSimulator()
    res = run_selftest(sim, open_db(tmp_path / "a.db"), store=store, n_features=8)
    assert res.passed and res.verdict == "PASS"
    assert len(res.details) == 8 and sim.calls == 16
    assert res.right[0] == pytest.approx(1.0)
    assert res.gap[0] > 0.5 and res.wrong[0] < 0.5
    # The wrong explanation is always another feature's true one.
    assert all(d.explanation != d.wrong_explanation for d in res.details)


@pytest.mark.parametrize("sim", [NoiseSimulator(), ConstantSimulator()], ids=["noise", "constant"])
def test_useless_simulators_fail(sim, store, tmp_path):
    res = run_selftest(sim, open_db(tmp_path / "a.db"), store=store, n_features=8)
    assert not res.passed
    assert abs(res.right[0]) < 0.2 and abs(res.gap[0]) < 0.2


def test_failures_are_reported_not_scored(store, tmp_path):
    res = run_selftest(FlakyOracle(), open_db(tmp_path / "a.db"), store=store, n_features=6)
    failed = [d for d in res.details if d.failure]
    # 'commas' fails once as its own right explanation and once as another feature's wrong one.
    assert res.n_failed == len(failed) == 2
    assert all("misaligned" in d.failure for d in failed)
    assert sum(d.right is None for d in res.details) == 1
    assert sum(d.wrong is None for d in res.details) == 1
    assert res.passed  # the other features are scored, and perfectly
    assert res.right[0] == pytest.approx(1.0)


def test_second_run_reads_the_database(store, tmp_path):
    db = open_db(tmp_path / "a.db")
    sim = OracleSimulator()
    first = run_selftest(sim, db, store=store, n_features=4)
    assert sim.calls == 8 and not first.cached
    again = run_selftest(sim, open_db(tmp_path / "a.db"), store=store, n_features=4)
    assert sim.calls == 8 and again.cached
    assert (again.id, again.passed, again.details) == (first.id, first.passed, first.details)
    # NaN (no CI) round-trips as NaN; assert_equal treats NaN as equal to NaN.
    np.testing.assert_equal((again.right, again.wrong, again.gap), (first.right, first.wrong, first.gap))
    assert load_selftest(db, first.id).passed
    # Other settings are another self-test.
    run_selftest(sim, db, store=store, n_features=4, right_threshold=0.9)
    assert sim.calls == 16 and db["selftests"].count == 2


def test_async_entry_point_inside_a_loop(store, tmp_path):
    async def main():
        return await selftest(OracleSimulator(), open_db(tmp_path / "a.db"), store=store,
                              settings=SelftestSettings(n_features=3))

    assert asyncio.run(main()).passed


@pytest.mark.parametrize("n", [2, 3, 12])
def test_derangement_has_no_fixed_point(n):
    for seed in range(20):
        d = derangement(n, seed)
        assert sorted(d) == list(range(n)) and all(d[i] != i for i in range(n))


def test_planted_fragments_fire_in_the_top_ones():
    lines = sentences(400, seed=1)
    texts = [" ".join(lines[i:i + 20]) for i in range(0, len(lines), 20)]  # 20 documents
    tok = word_tokenizer(texts)
    cases = plant(text_fragments(texts, tok, fragment_len=16), n_features=12, seed=3)
    assert {c.feature.name for c in cases} >= {"the", "digits", "comma", "close-bracket"}
    for case in cases:
        assert len(case.fragments) == 10
        assert all(any(fr.activations) for fr in case.fragments[:5])
        assert len({fr.tokens for fr in case.fragments}) == 10  # disjoint top and random
        assert all(isinstance(fr, Fragment) and len(fr.tokens) == 16 for fr in case.fragments)


def test_planted_definitions():
    by_name = {f.name: f for f in PLANTED}
    toks = [" The", " the", ",", " 1984", ").", " Paris", " them", " (", '"', " of", ":"]
    assert by_name["the"].activations(toks)[:2] == (10.0, 10.0)
    assert by_name["digits"].activations(toks).index(10.0) == 3
    assert by_name["close-bracket"].fires(").") and not by_name["close-bracket"].fires(" (")
    assert by_name["capitalised"].fires(" Paris") and not by_name["capitalised"].fires(" 1984")
    assert by_name["pronouns"].fires(" them") and not by_name["pronouns"].fires(" the")
    assert sum(by_name["comma"].activations(toks)) == 10.0
    assert by_name["quotes"].fires('"') and by_name["colon"].fires(":")
    assert not by_name["of"].fires(" offer") and by_name["of"].fires(" Of")


def test_cli_prints_the_verdict_and_warns(store, tmp_path):
    """The lexical simulator reads only quoted words ("the word 'the'"), so most planted
    explanations give it nothing to go on: a real simulator that fails the self-test."""
    from typer.testing import CliRunner

    from autointerp.cli import app

    args = ["selftest", "--acts", str(store.path), "--db", str(tmp_path / "a.db"),
            "--scoring-backend", "lexical", "--n-planted", "6"]
    out = CliRunner().invoke(app, args, terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "FAIL: lexical (lexical)" in out.output
    assert "scores from this simulator are not meaningful" in out.output
    assert "planted features were simulated both ways" in out.output
    row = next(open_db(tmp_path / "a.db")["selftests"].rows)
    assert row["passed"] == 0 and row["simulator"] == "lexical"
    assert "perturbation check [simulation]:" in out.output  # run beside every self-test
    assert open_db(tmp_path / "a.db")["perturbations"].count == 1
    again = CliRunner().invoke(app, args, terminal_width=200)
    assert "cached" in again.output and "FAIL" in again.output


def test_cli_judge_settings(store, tmp_path):
    """selftest takes score's detection and fuzzing settings; they are part of its key."""
    from typer.testing import CliRunner

    from autointerp.cli import app
    from autointerp.errors import BadInputError

    args = ["selftest", "--acts", str(store.path), "--db", str(tmp_path / "a.db"),
            "--scoring-backend", "lexical", "--scorer", "detection"]
    for extra in ([], ["--example-tokens", "12", "--examples-per-prompt", "5"]):
        out = CliRunner().invoke(app, args + extra, terminal_width=200)
        assert out.exit_code == 0, out.output
    assert open_db(tmp_path / "a.db")["selftests"].count == 2  # one per setting
    bad = CliRunner().invoke(app, args + ["--quantiles", "0"])
    assert isinstance(bad.exception, BadInputError) and "--quantiles" in str(bad.exception)


def test_cli_rejects_a_missing_store(tmp_path):
    from typer.testing import CliRunner

    from autointerp.cli import app
    from autointerp.errors import BadInputError

    out = CliRunner().invoke(app, ["selftest", "--acts", str(tmp_path / "nope"), "--db",
                                   str(tmp_path / "a.db"), "--scoring-backend", "lexical"])
    assert isinstance(out.exception, BadInputError) and "not an activation store" in str(out.exception)


@pytest.mark.slow
def test_real_smollm2_gets_a_recorded_verdict(tmp_path):
    """The offline default (SmolLM2-135M in process, all-at-once) on two planted features of
    the builtin corpus, one fragment each where it fires plus one random: whatever the
    verdict, it is recorded. (The full run and its figures: docs/notes/selftest.md.)"""
    from autointerp.scoring.llms import make_simulator

    db = open_db(tmp_path / "a.db")
    sim = make_simulator(db, "inprocess", None, "all-at-once", None, "OPENAI_API_KEY", 8, "cpu", {})
    res = run_selftest(sim, db, n_features=2, n_top=1, n_random=1)
    assert res.mode == "all-at-once" and len(res.details) == 2
    assert all(d.failure or (-1 <= d.right <= 1 and -1 <= d.wrong <= 1) for d in res.details)
    row = load_selftest(db, res.id)
    assert row is not None and row.passed == res.passed and row.verdict in ("PASS", "FAIL")


class ShortSimulator(OracleSimulator):
    """Drops the last token's prediction: output that does not align with the tokens."""

    name = "short"

    async def simulate(self, explanation, fragments):
        sim = await super().simulate(explanation, fragments)
        return Simulation(tuple(p[:-1] for p in sim.predictions), self.name, self.mode)


def test_misaligned_predictions_are_failures(store, tmp_path):
    res = run_selftest(ShortSimulator(), open_db(tmp_path / "a.db"), store=store, n_features=3)
    assert res.n_failed == 6 and not res.passed
    assert all(d.failure.startswith("right: misaligned") for d in res.details)
    assert "only 0 of 3 planted features were simulated both ways" in res.shortfalls()
