"""The failure ledger: every failure injected by a scripted endpoint (an unparsable answer,
a truncated one, a feature whose answers never parse, an explanation asked again) is
counted exactly, in score's summary and in compare's table; never a silently smaller n."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from autointerp.db import open_db
from autointerp.llm.base import Completion
from autointerp.results.compare import build_table
from autointerp.scoring.explain import LLMExplainer
from autointerp.scoring.fragments import FragmentConfig
from autointerp.scoring.ledger import Ledger, lost_kind, summarise_ledger
from autointerp.scoring.parsing import parse_records
from autointerp.scoring.pipeline import ScoreConfig, score_dictionary_runs
from autointerp.scoring.scorers.simulation import LLMSimulator
from autointerp.scoring.verdicts import JudgeSettings
from tests.support.data import N_LIVE, sparse_planted
from tests.support.llm import FakeClient, example_lines


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return sparse_planted(tmp_path_factory.mktemp("ledger"), n_fragments=200, lexical=True)


def scripted():
    """Explainer: names the top token, but its first answer for feature 3's token is empty.
    Judge: answers right, except feature 0's first answer (prose, no array), feature 1's
    first answer (cut at max_tokens), and every answer for feature 2 (never an array)."""
    words: dict[str, int] = {}

    def respond(request):
        system, last = request.messages[0][1], request.messages[-1][1]
        if "summarize" in system:
            ranked = sorted({t: int(v) for r in parse_records(last) for t, v in r}.items(),
                            key=lambda kv: (-kv[1], kv[0]))
            word = ranked[0][0].strip()
            words.setdefault(word, len(words))
            if request.sample_index == 0 and words[word] == 3:
                return Completion("")  # an empty explanation: asked again
            return Completion(f"the word '{word}'")
        word = re.search(r"'([^']+)'", last.splitlines()[0]).group(1)
        feature = words[word]
        if feature == 2 or (feature == 0 and request.sample_index == 0):
            return Completion("I cannot tell.")
        if feature == 1 and request.sample_index == 0:
            return Completion("[1, 0, 1", finish_reason="length")
        return Completion(json.dumps([int(word in line) for line in example_lines(last)]))

    return FakeClient(respond=respond, name="scripted", supports={"prompt_logprobs": False})


def test_injected_failures_are_counted_exactly(planted, tmp_path):
    _, dict_path = planted
    db = open_db(tmp_path / "r.db")
    client = scripted()
    cfg = ScoreConfig(dict_path, scorers=("detection",), selftest=False, concurrency=1,
                      fragments=FragmentConfig(n_held_out=10), judge=JudgeSettings(batch_size=50))
    (s,) = asyncio.run(score_dictionary_runs(cfg, LLMExplainer(client),
                                             LLMSimulator(client, "json"), db))
    assert (s.n_scored, s.n_failed) == (N_LIVE - 1, 1)
    # feature 0: 1 unparsed + 1 retry; feature 1: 1 truncated, 1 unparsed, 1 retry; feature 2:
    # 3 unparsed, 2 retries, lost; feature 3: its explanation 1 unparsed, 1 retry.
    assert s.ledger == ("lost 1 of 4 (1 parse); events: 6 unparsed answers, 5 retries, "
                        "1 truncated")
    table = build_table(db)
    assert table.ledger.tolist() == [s.ledger]
    assert int(table.n_scored.iloc[0]) + int(table.n_failed.iloc[0]) == N_LIVE


def test_every_lost_kind_is_named():
    assert lost_kind("detection: 3 positive and 0 negative detection examples; need 5") == "refused"
    assert lost_kind("detection: judge output unusable after 3 tries: no JSON array") == "parse"
    assert lost_kind("llm call failed: request timed out after 60 s") == "timeout"
    assert lost_kind("llm call failed: HTTP 500") == "call failed"
    assert lost_kind("explanation: explainer gave no usable answer in 3 tries") == "explanation"


def test_unfinished_features_are_counted_not_hidden():
    ledger = Ledger()
    ledger.note("dropped", "a chat-template control token", 2)
    rows = [{"status": "scored", "reason": None, "metrics": {"ledger": [ledger.to_json()]}}]
    out = summarise_ledger(rows, n_sampled=3)
    assert out.lost == {"unfinished": 2} and out.events == {"dropped": 2}
    assert out.line() == "lost 2 of 3 (2 unfinished); events: 2 dropped for safety"
