"""`--scorer output` and `--scorer intervention` through the score pipeline on a tiny
GPT-2 (weights 20x GPT-2's spread, so a push can move its next token): rows with the
output score, Arad's input score, KL-matched strengths and costs; the shuffled-explanation
null and the random-direction row; prompts disjoint from the explainer's fragments; a
rerun that steers nothing; compare and report columns."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from autointerp.db import open_db
from autointerp.harvest.run import HarvestConfig, harvest
from autointerp.results import compare
from autointerp.results.report import build_report
from autointerp.scoring.fragments import FragmentConfig
from autointerp.scoring.pipeline import ScoreConfig, score_dictionary_runs
from autointerp.scoring.scorers import parse_scorers
from autointerp.scoring.scorers.lexical import LexicalExplainer, LexicalSimulator
from autointerp.scoring.scorers.output import output_score
from autointerp.scoring.steered import SteerSettings
from tests.support.cli import random_dictionary
from tests.support.models import build_tiny, corpus_text, single_torch_thread

one_thread = pytest.fixture(autouse=True)(single_torch_thread)
STEER = SteerSettings(n_prompts=4, prompt_tokens=8, continuation_tokens=4, n_null=2, tolerance=0.05)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    corpus = root / "docs.txt"
    corpus.write_text(corpus_text(0, n_paragraphs=60), encoding="utf-8")
    store = harvest(HarvestConfig(hook="resid.0", model=str(build_tiny("gpt2", root / "gpt2", n_layer=2, initializer_range=0.4)),
                                  corpus=str(corpus), n_tokens=3000, eval_fraction=0.5,
                                  device="cpu", dtype="float32", batch_size=16, out=root / "store"))
    dict_path = random_dictionary(store, root / "dict", n_features=8)
    db = open_db(root / "r.db")
    cfg = ScoreConfig(dict_path, scorers=("output", "intervention"), selftest=False,
                      fragments=FragmentConfig(n_features=2), steering=STEER)
    summaries = asyncio.run(score_dictionary_runs(cfg, LexicalExplainer(), LexicalSimulator(), db))
    return {"db": db, "cfg": cfg, "summaries": summaries}


def _rows(db, scorer):
    return list(db.query("select f.* from features f join runs r on r.id = f.run_id "
                         "where r.scorer = ? order by feature", [scorer]))


def test_all_keeps_its_meaning_and_output_scorers_are_named():
    assert parse_scorers(["all"]) == ("simulation", "detection", "fuzzing")
    assert parse_scorers(["intervention", "output"]) == ("output", "intervention")


def test_output_score_formula():
    logp = torch.log_softmax(torch.tensor([[0.0, 3.0, 1.0, 2.0]]), -1)
    # T = {2, 3}: best rank 1 (token 3), the highest probability among T is token 3's
    expected = (1 - 1 / 4) * logp[0, 3].exp()
    assert output_score(logp, [2, 3])[0] == pytest.approx(float(expected))


def test_rows_carry_scores_strengths_and_costs(run):
    db = run["db"]
    out, inter = _rows(db, "output"), _rows(db, "intervention")
    assert len(out) == len(inter) == 2
    for r in out:
        assert r["status"] == "scored", r["reason"]
        m, frags = json.loads(r["metrics"]), json.loads(r["fragments"])
        assert abs(m["kl"][0] - STEER.target_kl) <= STEER.tolerance
        assert 0 <= m["input_score"][0] <= 1 and 0 < r["score"] <= 1
        assert m["costs"][0]["forward_passes"] > 0 and m["costs"][0]["seconds"] > 0
        assert len(frags["promoted"][0]) == STEER.top_tokens
        shown = {f["index"] for f in frags["explainer"]}
        assert not shown & set(frags["prompt_fragments"][0])  # prompts are held out
        assert "random_direction" in m
    for r in inter:
        m, frags = json.loads(r["metrics"]), json.loads(r["fragments"])
        assert r["status"] == "scored", r["reason"]
        assert m["vs_null_lo"] <= m["vs_null"] <= m["vs_null_hi"]
        assert m["costs"][0]["generated_tokens"] == 2 * STEER.n_prompts * STEER.continuation_tokens
        clean, steered = frags["continuations"][0]["clean"], frags["continuations"][0]["steered"]
        assert len(clean) == len(steered) == STEER.n_prompts


def test_rerun_steers_nothing(run, monkeypatch):
    from autointerp.causal import steering

    def refuse(*a, **k):
        raise AssertionError("a rerun must not steer again")

    db = run["db"]
    before = db["steering_cache"].count
    monkeypatch.setattr(steering.Steerer, "calibrate", refuse)
    monkeypatch.setattr(steering.Steerer, "generate", refuse)
    asyncio.run(score_dictionary_runs(run["cfg"], LexicalExplainer(), LexicalSimulator(), db))
    assert db["steering_cache"].count == before


def test_compare_and_report_show_output_columns(run, tmp_path):
    files = compare.write_comparison(run["db"], tmp_path)
    assert "## Output-side scores" in files.paths["table.md"].read_text()
    assert files.paths["scores.png"].stat().st_size > 0
    table = compare.build_table(run["db"])
    out = table[table.scorer == "output"].iloc[0]
    assert 0 <= out.input_mean <= 1 and out.steer_forward_passes_per_feature > 0
    inter = table[table.scorer == "intervention"].iloc[0]
    assert inter.vs_null_lo <= inter.vs_null_mean <= inter.vs_null_hi
    from autointerp.results.output_columns import output_markdown

    text = output_markdown(table)
    assert "## Output-side scores" in text and "random direction" in text
    page, _ = build_report(run["db"])
    assert "continuations: clean beside steered" in page and "promotes" in page


def test_explain_outputs_shows_the_steering_tokens_and_is_scored_as_a_second_run(run,
                                                                                 monkeypatch):
    """The output-centric explainer's prompt names the tokens steering makes most and least
    likely (the same KL-matched strength as the output scorer, read from its cache); its
    explanations are a second run, labelled +outputs, scored by every scorer."""
    from autointerp.causal import steering
    from autointerp.scoring.explain import LLMExplainer
    from autointerp.scoring.explain_outputs import OutputCentricExplainer
    from tests.support.llm import FakeClient

    client = FakeClient(respond=lambda request: "tokens the steering promotes")
    explainer = OutputCentricExplainer(LLMExplainer(client), STEER)
    db = run["db"]
    monkeypatch.setattr(steering.Steerer, "calibrate", lambda *a, **k: pytest.fail("calibrated"))
    summaries = asyncio.run(score_dictionary_runs(run["cfg"], explainer, LexicalSimulator(), db))
    assert {s.label for s in summaries} == {"random-dirs +outputs (lexical simulator)"}
    assert {s.run_id for s in summaries}.isdisjoint({s.run_id for s in run["summaries"]})
    last = client.requests[0].messages[-1][1]
    assert "more likely: '" in last and "less likely: '" in last
    assert last.rstrip().endswith("the main thing this feature does is find")
    for summary in summaries:  # the output and the intervention runs
        rows = list(db["features"].rows_where("run_id = ?", [summary.run_id]))
        assert [r["status"] for r in rows] == ["scored", "scored"]
        assert {r["explanation"] for r in rows} == {"tokens the steering promotes"}


def test_intervention_through_a_client_sums_the_explanations_prompt_logprobs():
    from autointerp.llm.base import Completion, TokenLogprob
    from autointerp.scoring.scorers.intervention import TEMPLATE, client_logprobs
    from tests.support.llm import FakeClient

    class Tok:  # passages decode to fixed text
        def decode(self, ids):
            return "passage " + str(len(ids))

    def respond(req):
        prefix = req.prompt[:req.prompt.index(TEMPLATE) + len(TEMPLATE)]
        # the prefix as two tokens, then the explanation as one token of logprob -len(E)
        explanation = req.prompt[len(prefix):]
        return Completion("", prompt_tokens=(TokenLogprob(prefix[:5], None),
                                             TokenLogprob(prefix[5:], -9.0),
                                             TokenLogprob(explanation, -float(len(explanation)))))

    client = FakeClient(respond=respond, supports={"prompt_logprobs": True})
    got = asyncio.run(client_logprobs(client, Tok(), [[1, 2], [3]], ["Paris", " dogs "]))
    assert got.tolist() == [[-5.0, -5.0], [-4.0, -4.0]]  # only E's tokens, stripped
    assert all(r.prompt_logprobs == 1 and r.max_tokens == 1 for r in client.requests)
