"""The pipeline explains once and scores with every scorer asked for: one run per
scorer, failures recorded with reasons, every call cached, zero-call reruns, resume,
and tokens and calls billed per feature per scorer."""

from __future__ import annotations

import json
import re

import pytest

from autointerp.db import open_db
from autointerp.llm.base import Completion, Usage
from autointerp.llm.cache import CachedClient
from autointerp.scoring.explain import LLMExplainer
from autointerp.scoring.parsing import parse_numbered, parse_records
from autointerp.scoring.pipeline import ScoreConfig, score_dictionary_runs
from autointerp.scoring.scorers.lexical import LexicalExplainer, LexicalSimulator
from autointerp.scoring.scorers.simulation import LLMSimulator
from tests.support.data import N_LIVE, sparse_planted
from tests.support.llm import FakeClient, example_lines


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return sparse_planted(tmp_path_factory.mktemp("detpipe"), n_fragments=200, lexical=True)


def run(cfg, explainer, simulator, db):
    import asyncio
    return asyncio.run(score_dictionary_runs(cfg, explainer, simulator, db))


def test_lexical_scorers_share_one_explanation(planted, tmp_path):
    _, dict_path = planted
    db = open_db(tmp_path / "r.db")
    sims = run(ScoreConfig(dict_path, scorers=("all",)), LexicalExplainer(), LexicalSimulator(), db)
    assert [s.scorer for s in sims] == ["simulation", "detection", "fuzzing"]
    assert len({s.run_id for s in sims}) == 3 and all(s.n_scored == N_LIVE for s in sims)
    rows = {s.scorer: {r["feature"]: r for r in db.query(
        "select * from features where run_id = ?", [s.run_id])} for s in sims}
    for f in range(N_LIVE):  # one explanation, scored three ways
        assert len({rows[k][f]["explanation"] for k in rows}) == 1
        assert rows["detection"][f]["score"] == 1.0 and rows["detection"][f]["auroc"] == 1.0
        assert rows["fuzzing"][f]["score"] >= 0.9
        assert len(json.loads(rows["detection"][f]["metrics"])["recall_per_quantile"][0]) == 10
        assert rows["detection"][f]["n_calls"] == 0  # the lexical reference calls nothing
    assert sims[1].selftest_id and sims[1].selftest_id != sims[0].selftest_id
    again = run(ScoreConfig(dict_path, scorers=("detection",)), LexicalExplainer(),
                LexicalSimulator(), db)
    assert again[0].run_id == sims[1].run_id and db["runs"].count == 3


def fake_llm(judge_reply=None):
    """Explainer: names the top token; simulator (json): 10 on the quoted word; judge: 1
    where the quoted word occurs in the example (fuzzing: among the marked tokens)."""
    def respond(request):
        system, last = request.messages[0][1], request.messages[-1][1]
        chars = sum(len(c) for _, c in request.messages)
        if "summarize" in system:
            ranked = sorted({t: int(v) for r in parse_records(last) for t, v in r}.items(),
                            key=lambda kv: (-kv[1], kv[0]))
            text = f"the word '{ranked[0][0].strip()}'"
        elif "JSON array of 1s and 0s" in system:
            if judge_reply:
                return judge_reply
            word = re.search(r"'([^']+)'", last.splitlines()[0]).group(1)
            marked = "marked" in system
            text = json.dumps([int(word in (" ".join(re.findall(r"<<(.*?)>>", line)) if marked
                                           else line)) for line in example_lines(last)])
        else:
            word = re.search(r"'([^']+)'", last.splitlines()[0]).group(1)
            text = json.dumps([10 if t.strip() == word else 0 for t in parse_numbered(last)[0]])
        return Completion(text, usage=Usage(chars // 4, len(text) // 2))
    return FakeClient(respond=respond, name="fake-llm", supports={"prompt_logprobs": False})


def llm_pair(db, fake):
    client = CachedClient(fake, db)
    return LLMExplainer(client), LLMSimulator(client, "json")


def test_llm_scorers_cache_bill_and_rerun_at_zero_calls(planted, tmp_path):
    _, dict_path = planted
    db = open_db(tmp_path / "r.db")
    cfg = ScoreConfig(dict_path, scorers=("simulation", "detection", "fuzzing"), selftest=False)
    first = fake_llm()
    sims = run(cfg, *llm_pair(db, first), db)
    assert all(s.n_scored == N_LIVE for s in sims)
    explains = [r for r in first.requests if "summarize" in r.messages[0][1]]
    assert len(explains) == N_LIVE  # explained once, scored three ways
    cost = {s.scorer: dict(s.cost) for s in sims}
    assert all(c["explain_n_calls"] == 1 and c["explain_prompt_tokens"] > 0 for c in cost.values())
    assert cost["simulation"]["n_calls"] == 10  # one per scoring fragment
    assert cost["detection"]["n_calls"] >= 2 and cost["detection"]["prompt_tokens"] > 0
    assert all(c["usage_unknown"] == 0 for c in cost.values())
    assert sims[1].mean > 0.9
    second = fake_llm()
    again = run(cfg, *llm_pair(db, second), db)
    assert second.requests == [] and [s.cost for s in again] == [s.cost for s in sims]
    # Resume: detection rows of two features lost; only those are redone, from the cache.
    db.execute("delete from features where run_id = ? and feature < 2", [sims[1].run_id])
    db.conn.commit()
    before = list(db.query("select * from features where run_id = ?", [sims[0].run_id]))
    third = fake_llm()
    resumed = run(cfg, *llm_pair(db, third), db)
    assert third.requests == [] and resumed[1].n_scored == N_LIVE
    assert list(db.query("select * from features where run_id = ?", [sims[0].run_id])) == before


def test_unusable_verdicts_fail_the_scorer_not_the_feature(planted, tmp_path):
    _, dict_path = planted
    db = open_db(tmp_path / "r.db")
    cfg = ScoreConfig(dict_path, scorers=("simulation", "detection"), selftest=False)
    sims = run(cfg, *llm_pair(db, fake_llm(judge_reply="[1, 0]")), db)
    assert sims[0].n_scored == N_LIVE and sims[1].n_scored == 0
    assert sims[1].failures == (("detection: judge output unusable after N tries: expected N "
                                 "values, got N", N_LIVE),)
    assert dict(sims[1].cost)["n_calls"] >= 3  # the failed tries were billed


def test_cli_scorer_option(planted, tmp_path):
    from typer.testing import CliRunner

    from autointerp.cli import app

    base = ["score", "--dict", str(planted[1]), "--db", str(tmp_path / "r.db"), "--explainer",
            "lexical", "--scoring-backend", "lexical"]
    result = CliRunner().invoke(app, base + ["--scorer", "detection", "--scorer", "fuzzing"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "detection" in result.output and "fuzzing" in result.output
    assert "Cost per feature" in result.output
    assert {r["scorer"] for r in open_db(tmp_path / "r.db")["runs"].rows} == {"detection", "fuzzing"}
    bad = CliRunner().invoke(app, base + ["--scorer", "vibes"])
    assert bad.exit_code == 2 and "'vibes' is not one of" in bad.output, bad.output


def test_cli_judge_settings(planted, tmp_path):
    """--examples-per-prompt, --example-tokens and --quantiles reach the scorer and its run."""
    from dataclasses import asdict

    from typer.testing import CliRunner

    from autointerp.cli import app
    from autointerp.errors import BadInputError
    from autointerp.scoring.verdicts import JudgeSettings

    db_path = tmp_path / "r.db"
    base = ["score", "--dict", str(planted[1]), "--db", str(db_path), "--explainer", "lexical",
            "--scoring-backend", "lexical", "--scorer", "detection", "--no-selftest"]
    result = CliRunner().invoke(app, base + ["--examples-per-prompt", "5", "--example-tokens",
                                             "12", "--quantiles", "4"])
    assert result.exit_code == 0, result.output
    db = open_db(db_path)
    (run,) = db["runs"].rows
    settings = json.loads(run["config"])["scorer_settings"]
    assert (settings["batch_size"], settings["example_len"], settings["n_quantiles"]) == (5, 12, 4)
    rows = list(db.query("select metrics, fragments from features where run_id = ?", [run["id"]]))
    assert rows
    for row in rows:  # one explanation per feature: its record is [0]
        assert len(json.loads(row["metrics"])["recall_per_quantile"][0]) == 4
        examples = json.loads(row["fragments"])["examples"][0]
        assert {len(e["tokens"]) for e in examples} == {12}
    default = CliRunner().invoke(app, base)  # another run: the settings are in its id
    assert default.exit_code == 0, default.output
    assert db["runs"].count == 2  # the CLI's defaults are JudgeSettings':
    newest = json.loads(list(db.query("select config from runs order by rowid desc limit 1"))[0]
                        ["config"])["scorer_settings"]
    assert {k: newest[k] for k in asdict(JudgeSettings())} == asdict(JudgeSettings())
    for flag, value in (("--examples-per-prompt", "0"), ("--example-tokens", "1"),
                        ("--quantiles", "0")):
        bad = CliRunner().invoke(app, base + [flag, value])
        assert isinstance(bad.exception, BadInputError) and flag in str(bad.exception)
    long = CliRunner().invoke(app, base + ["--example-tokens", "65"])
    assert isinstance(long.exception, BadInputError)
    assert "longer than the store's 64-token fragments" in str(long.exception)


def judge_answer(messages: list[dict]) -> str:
    """OracleEndpoint's answers, and for a judge prompt an array of 1s of the right length."""
    from tests.support.servers.oracle import OracleEndpoint

    if "JSON array of 1s and 0s" in messages[0]["content"]:
        return json.dumps([1] * len(example_lines(messages[-1]["content"])))
    return OracleEndpoint.answer(messages)


def test_planted_key_leaks_nowhere_with_every_scorer(planted, tmp_path):
    """The secrets test's check (tests/test_secrets.py) for runs with the new prompts: the
    key goes to the endpoint with every judge request and into no file or output."""
    from tests.support.secrets import SECRET, files_under, run, score_args
    from tests.support.servers.faulty import FaultPlan, FaultyServer

    db, outputs = tmp_path / "results" / "s.db", {}
    with FaultyServer(FaultPlan(api_key=SECRET, max_seconds=200), judge_answer) as server:
        ok = run(score_args(planted[1], db, server.url) + ["--scorer", "all", "--no-selftest"],
                 tmp_path, outputs, "score")
        assert ok.returncode == 0, ok.stderr
        assert server.count("401") == 0
    out = open_db(db)
    judged = [r for r in out.query("select request from llm_calls") if "1s and 0s" in r["request"]]
    assert judged and {r["scorer"] for r in out["runs"].rows} == {"simulation", "detection",
                                                                  "fuzzing"}
    report = run(["report", "--db", db, "--out", tmp_path / "results" / "report.html"],
                 tmp_path, outputs, "report")
    assert report.returncode == 0, report.stderr
    leaks = [name for name, text in outputs.items() if SECRET in text]
    leaks += [name for name, data in files_under(tmp_path).items() if SECRET.encode() in data]
    assert leaks == []


def test_scoring_option_names_choose_the_model_of_every_scorer(planted, tmp_path):
    """--scoring-backend/--scoring-model... are the new names of --simulator...; both work."""
    from typer.testing import CliRunner

    from autointerp.cli import app

    for backend_flag in ("--scoring-backend", "--scoring-backend"):
        db = tmp_path / f"{backend_flag.strip('-')}.db"
        result = CliRunner().invoke(app, ["score", "--dict", str(planted[1]), "--db", str(db),
                                          "--explainer", "lexical", backend_flag, "lexical",
                                          "--scorer", "all", "--no-selftest"])
        assert result.exit_code == 0, result.output
        runs = list(open_db(db)["runs"].rows)
        assert len(runs) == 3 and {r["simulator"] for r in runs} == {"lexical"}
