"""The detection and fuzzing self-test on planted features: a judge that reads the
planted feature named by the explanation passes; one that always says 1 fails; the
verdict is cached per scorer and recorded with its thresholds."""

from __future__ import annotations

import asyncio

import pytest

from autointerp.db import open_db
from autointerp.scoring.planted import PLANTED
from autointerp.scoring.scorers.detection import DetectionScorer
from autointerp.scoring.scorers.fuzzing import FuzzingScorer
from autointerp.scoring.scorers.lexical import LexicalSimulator
from autointerp.scoring.selftest import SelftestSettings, selftest
from autointerp.scoring.selftest_judges import GAP_THRESHOLD, RIGHT_THRESHOLD
from autointerp.scoring.verdicts import JudgeSettings, Verdict

BY_EXPLANATION = {p.explanation: p for p in PLANTED}


class PlantedOracle:
    """Answers from the planted feature its explanation names: a competent judge."""

    name = mode = "oracle"

    def __init__(self, task: str, always_one: bool = False):
        self.task, self.always_one, self.calls = task, always_one, 0

    def settings(self) -> dict:
        return {"name": self.name, "task": self.task, "always_one": self.always_one}

    async def prepare(self) -> None:
        return None

    async def judge(self, explanation, batch):
        self.calls += 1
        fires = BY_EXPLANATION[explanation].fires
        out = []
        for ex in batch:
            if self.always_one:
                out.append(Verdict(1, 0.9))
                continue
            hit = (any(fires(t) for t in ex.tokens) if self.task == "detection" else
                   all(fires(ex.tokens[i]) for i in ex.marks))
            out.append(Verdict(int(hit), 0.9 if hit else 0.1))
        return out


@pytest.fixture(scope="module")
def corpus_fragments():
    from autointerp.scoring.selftest import _fragments

    return _fragments(None, None, 400)  # the builtin corpus, SmolLM2's tokenizer


@pytest.mark.parametrize("cls, task", [(DetectionScorer, "detection"), (FuzzingScorer, "fuzzing")])
def test_oracle_passes_and_always_one_fails(cls, task, tmp_path, monkeypatch, corpus_fragments):
    import autointerp.scoring.selftest as st

    monkeypatch.setattr(st, "_fragments", lambda *a: corpus_fragments)
    db = open_db(tmp_path / "s.db")
    oracle = PlantedOracle(task)
    res = asyncio.run(selftest(LexicalSimulator(), db, scorer=cls(oracle, JudgeSettings())))
    assert res.passed and res.scorer == task and len(res.details) == 8
    assert res.right[0] >= 0.95 and res.gap[0] >= GAP_THRESHOLD
    assert (res.right_threshold, res.gap_threshold) == (RIGHT_THRESHOLD, GAP_THRESHOLD)
    calls = oracle.calls
    again = asyncio.run(selftest(LexicalSimulator(), db, scorer=cls(oracle, JudgeSettings())))
    assert again.cached and oracle.calls == calls and again.scorer == task
    useless = asyncio.run(selftest(LexicalSimulator(), db,
                                   scorer=cls(PlantedOracle(task, True), JudgeSettings())))
    assert not useless.passed and useless.right[0] == pytest.approx(0.5)
    assert "mean score with the true explanation 0.500 < 0.75" in useless.shortfalls()
    rows = {r["id"]: r for r in db["selftests"].rows}
    assert {r["scorer"] for r in rows.values()} == {task} and len(rows) == 2
    sim = asyncio.run(selftest(LexicalSimulator(), db, settings=SelftestSettings(n_features=2)))
    assert sim.scorer == "simulation" and sim.id not in rows
