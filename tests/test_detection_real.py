"""Detection and fuzzing for real: SmolLM2 through the llama.cpp server (echo prompt
logprobs, shift-corrected by the client) and in process, on windows of the builtin
corpus where a planted feature ('the') fires and where it does not. Whatever SmolLM2
answers, every example gets a P(1) from logprobs, the scores are computed from them,
and a rerun is answered from the cache."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import replace

import pytest

from autointerp.db import open_db
from autointerp.llm.cache import CachedClient
from autointerp.scoring.scorers.detection import DetectionScorer
from autointerp.scoring.scorers.fuzzing import FuzzingScorer
from autointerp.scoring.scorers.simulation import LLMSimulator
from autointerp.scoring.selftest_judges import judge_cases
from autointerp.scoring.verdicts import JudgeSettings, LLMJudge

pytestmark = pytest.mark.slow

SETTINGS = JudgeSettings(min_per_class=2)


@pytest.fixture(scope="module")
def feature():
    from autointerp.harvest.corpus import open_corpus
    from autointerp.scoring.planted import smollm2_tokenizer, text_fragments

    fragments = text_fragments((d.text for d in open_corpus("builtin")), smollm2_tokenizer(),
                               max_fragments=120)
    (planted, ff), = judge_cases(fragments, n_features=1, seed=0,
                                 example_len=SETTINGS.example_len)
    assert planted.name == "the" and len(ff.held_out) == len(ff.negatives) == 10
    return planted.explanation, ff


def _score_both(client, feature, settings=SETTINGS):
    explanation, ff = feature
    sim = LLMSimulator(client, "auto")

    async def main():
        out = {}
        for cls, task in ((DetectionScorer, "detection"), (FuzzingScorer, "fuzzing")):
            scorer = cls(LLMJudge(sim, task), settings)
            await scorer.prepare()
            out[task] = await scorer.score(explanation, ff, 5)
        return out
    return sim, asyncio.run(main())


def _check(sim, records, n_examples: int = 20):
    assert sim.mode == "all-at-once"
    for task, r in records.items():
        examples = r.details["examples"]
        # n/2 + n/2; fuzzing: n/4 right, n/4 wrong marks, n/2 zero-activation
        assert len(examples) == n_examples, task
        assert all(x["p1"] is not None and 0 <= x["p1"] <= 1 for x in examples)
        assert 0 <= r.score <= 1 and (math.isnan(r.auroc) or 0 <= r.auroc <= 1)
        assert not math.isnan(r.auroc)  # P(1) from logprobs for every example
        n, total = r.details["no_answer"]
        assert total == len(examples) and n <= total // 2


@pytest.mark.timeout(1800)
def test_detection_and_fuzzing_on_llamacpp(llamacpp_server, feature, tmp_path):
    from autointerp.llm.openai_client import OpenAIClient

    # llama.cpp serves one request at a time, slowly on shared CPUs (measured: 184 s for
    # one 354-token echo request under a load of 12 on 2 cores): 2 + 2 examples, one
    # batch per scorer, one request in flight.
    explanation, ff = feature
    small = (explanation, replace(ff, held_out=ff.held_out[:2], negatives=ff.negatives[:2]))
    settings = replace(SETTINGS, batch_size=4, min_per_class=1)

    def client():
        return CachedClient(OpenAIClient(llamacpp_server.url, "smollm2", timeout_s=600,
                                         max_total_s=1200, concurrency=1), db)
    db = open_db(tmp_path / "w.db")
    first = client()
    sim, records = _score_both(first, small, settings)
    _check(sim, records, n_examples=4)
    asked = [q for q in (json.loads(r["request"]) for r in db.query("select request from llm_calls"))
             if "Answer:\tunknown" in (q.get("prompt") or "") and q["prompt_logprobs"] > 0]
    assert len(asked) == 2  # 1 detection + 1 fuzzing batch, through echo
    calls = first.calls
    again_client = client()
    _, again = _score_both(again_client, small, settings)
    assert again_client.calls == 0 and calls > 0
    assert {k: r.score for k, r in again.items()} == {k: r.score for k, r in records.items()}


def test_detection_and_fuzzing_in_process(feature, tmp_path):
    from autointerp.llm.inprocess import TransformersClient

    db = open_db(tmp_path / "p.db")
    client = CachedClient(TransformersClient("smollm2-135m", device="cpu"), db)
    sim, records = _score_both(client, feature)
    _check(sim, records)
    # In process the candidates "0" and "1" are read exactly at every slot: no slot lacks them.
    assert all(r.details["no_answer"][0] == 0 for r in records.values())
    bigger = replace(SETTINGS, batch_size=5)
    scorer = DetectionScorer(LLMJudge(sim, "detection"), bigger)
    r = asyncio.run(scorer.score(feature[0], feature[1], 5))
    assert len(r.details["examples"]) == 20
