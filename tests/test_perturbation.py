"""Perturbation checks: on planted word sets, the right explanation beats a missing-label
and an extra-label one for every scorer, with the lexical reference and with a scripted
judge that answers perfectly; a scorer that ignores the explanation is flagged, in its
record and in compare's verdict lines."""

from __future__ import annotations

import asyncio
import json
import re

import numpy as np
import pytest

from autointerp.db import open_db
from autointerp.llm.base import Completion
from autointerp.scoring.parsing import parse_numbered
from autointerp.scoring.perturbation import CASES, checked, perturbation_check
from autointerp.scoring.scorers import make_scorers
from autointerp.scoring.scorers.detection import DetectionScorer
from autointerp.scoring.scorers.lexical import LexicalSimulator, parse_explanation, token_key
from autointerp.scoring.scorers.simulation import LLMSimulator
from autointerp.scoring.verdicts import Verdict
from tests.support.llm import FakeClient, example_lines

FILLER = ("cat", "house", "runs", "green", "river", "quickly", "table", "music", "old", "sky",
          "letter", "moves", "stone", "bright", "city", "walks", "paper", "slow", "tree", "sings")


def english(n: int = 300, seed: int = 0) -> list[tuple[int, tuple[str, ...]]]:
    """64-token fragments of word salad in which each planted word set and the extra
    concept's tokens ('the', 'a', ',', '.') occur now and then."""
    rng = np.random.default_rng(seed)
    vocab = list(FILLER) + [w for c in CASES for w in c.words] + ["the", "a", ",", "."]
    weights = np.array([8.0] * len(FILLER) + [1.0] * (len(vocab) - len(FILLER) - 4) + [3.0] * 4)
    p = weights / weights.sum()
    return [(-1, tuple(" " + w if w not in ",." else w for w in rng.choice(vocab, 64, p=p)))
            for _ in range(n)]


def perfect_endpoint() -> FakeClient:
    """Answers exactly what the explanation says: the words it quotes fire (10 / 1)."""
    def respond(request):
        system, user = request.messages[0][1], request.messages[-1][1]
        line = user.splitlines()[0]  # the explanation's line
        words = set(parse_explanation(line.split("Explanation: ")[-1].split("does is find ")[-1]))
        if "JSON array of 1s and 0s" in system:
            lines = example_lines(user)
            if "marked" in system:
                hits = [[token_key(t) in words for t in re.findall(r"<<(.*?)>>", ln)] for ln in lines]
                values = [int(bool(h) and sum(h) * 2 >= len(h)) for h in hits]
            else:
                values = [int(any(token_key(t) in words for t in re.split(r"(?<=\w)(?=\W)|\s", ln)))
                          for ln in lines]
            return Completion(json.dumps(values))
        tokens = parse_numbered(user)[0]
        return Completion(json.dumps([10 if token_key(t) in words else 0 for t in tokens]))
    return FakeClient(respond=respond, name="perfect", supports={"prompt_logprobs": False})


def scorers_for(simulator):
    return make_scorers(("all",), simulator)


@pytest.mark.parametrize("which", ["lexical", "perfect"])
def test_right_explanation_beats_both_perturbations_for_every_scorer(which):
    simulator = LexicalSimulator() if which == "lexical" else \
        LLMSimulator(perfect_endpoint(), "json", scale_max=10)
    fragments = english()
    for scorer in scorers_for(simulator):
        res = asyncio.run(perturbation_check(scorer, fragments))
        assert res.n_cases == len(CASES), scorer.name
        assert res.missing_drop[1] > 0 and res.extra_drop[1] > 0, (scorer.name, res)
        assert not res.flagged


class IgnoresTheExplanation:
    """A broken judge: it answers from the truth, whatever the explanation says."""
    name, mode = "broken", "broken"

    def settings(self):
        return {"name": self.name}

    async def prepare(self):
        return None

    async def judge(self, explanation, batch):
        return [Verdict(e.label, float(e.label)) for e in batch]


def test_a_scorer_that_ignores_the_explanation_is_flagged(tmp_path):
    scorer = DetectionScorer(IgnoresTheExplanation())
    res = asyncio.run(perturbation_check(scorer, english()))
    assert res.right[0] == 1.0 and res.missing_drop[0] == 0 and res.flagged


def test_flag_reaches_compare_verdict_lines(tmp_path, monkeypatch):
    from autointerp.results.compare import verdict_lines
    from autointerp.scoring import selftest

    monkeypatch.setattr(selftest, "_fragments", lambda store, tok, n: english())
    db = open_db(tmp_path / "r.db")
    broken = DetectionScorer(IgnoresTheExplanation())
    lexical = make_scorers(("detection",), LexicalSimulator())[0]
    sim = LexicalSimulator()
    assert asyncio.run(checked(broken, sim, db)).flagged
    assert not asyncio.run(checked(lexical, sim, db)).flagged
    db["runs"].insert({"id": "r", "label": "topk", "simulator": "lexical",
                       "simulator_mode": "lexical", "scorer": "detection", "config": "{}"})
    lines = verdict_lines(db)
    assert lines[0].startswith("WARNING: detection with lexical (lexical) FAILED its "
                               "perturbation check")
    assert any(ln.startswith("Perturbation check passed: detection") for ln in lines)
    again = asyncio.run(checked(broken, sim, db))  # read back, not recomputed
    assert again.flagged and db["perturbations"].count == 2
