import json
import math
import re
import signal
import subprocess
import sys
import time

import pytest

from autointerp.db import open_db
from autointerp.llm.base import LLMCallError
from autointerp.llm.cache import CachedClient
from autointerp.scoring.explain import LLMExplainer
from autointerp.scoring.parsing import parse_numbered, parse_records
from autointerp.scoring.pipeline import CALL_FAILED, ScoreConfig, score_dictionary
from autointerp.scoring.scorers.lexical import LexicalExplainer, LexicalSimulator
from autointerp.scoring.scorers.simulation import LLMSimulator
from tests.support.data import PLANTED_WORDS, make_planted
from tests.support.llm import FakeClient


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    store, dict_path, _ = make_planted(root, n_noise=2)
    return store, dict_path


def oracle_endpoint(**kw):
    """A fake chat endpoint that behaves like a competent LLM: as explainer it names the
    top token (the second one for odd sample indices), as simulator it predicts 10 on the
    words quoted in the explanation."""
    def respond(request):
        system, last = request.messages[0][1], request.messages[-1][1]
        if "summarize" in system:
            records = parse_records(last)
            ranked = sorted({t.strip().lower(): int(v) for r in records for t, v in r}.items(),
                            key=lambda kv: (-kv[1], kv[0]))
            return f"the word '{ranked[request.sample_index % 2][0]}'."
        explanation = last.splitlines()[0].split(" does is find ", 1)[1]
        words = {a or b for a, b in re.findall(r"'([^']+)'|\"([^\"]+)\"", explanation)}
        tokens = parse_numbered(last)[0]
        return json.dumps([10 if t.strip().lower() in words else 0 for t in tokens])
    return FakeClient(respond=respond, name="oracle", supports={"prompt_logprobs": False}, **kw)


def llm_pair(db, fake, temperature=0.0):
    client = CachedClient(fake, db)
    return LLMExplainer(client, temperature=temperature), LLMSimulator(client, "json")


def rows(db, run_id):
    return {r["feature"]: r for r in db.query("select * from features where run_id = ?", [run_id])}


def test_lexical_run_end_to_end(planted, tmp_path):
    store, dict_path = planted
    db = open_db(tmp_path / "r.db")
    s = score_dictionary(ScoreConfig(dict_path), LexicalExplainer(), LexicalSimulator(), db)
    n_live = len(PLANTED_WORDS) + 2
    assert (s.n_sampled, s.n_scored, s.n_failed, s.n_skipped) == (n_live, n_live, 0, 16 - n_live)
    assert s.label == "planted (lexical)" and s.selftest_id is not None
    by_feature = rows(db, s.run_id)
    assert all(by_feature[j]["score"] >= 0.9 for j in range(len(PLANTED_WORDS)))
    assert s.lo <= s.mean <= s.hi
    frags = json.loads(by_feature[0]["fragments"])
    assert len(frags["explainer"]) == 5 and len(frags["scoring"]) == 10
    assert len(frags["simulations"][0]) == 10
    d = db["dictionaries"].get(db["runs"].get(s.run_id)["dictionary_id"])
    assert (d["method"], d["l0"], d["fvu"], d["n_features"]) == ("planted", 1.0, 0.1, 16)
    again = score_dictionary(ScoreConfig(dict_path), LexicalExplainer(), LexicalSimulator(), db)
    assert again.run_id == s.run_id and rows(db, s.run_id) == by_feature  # nothing rescored
    other = score_dictionary(ScoreConfig(dict_path, fragments=type(ScoreConfig(dict_path).fragments)(
        seed=1)), LexicalExplainer(), LexicalSimulator(), db)
    assert other.run_id != s.run_id


def test_rerun_makes_zero_llm_calls(planted, tmp_path):
    _, dict_path = planted
    db = open_db(tmp_path / "r.db")
    first = oracle_endpoint()
    s = score_dictionary(ScoreConfig(dict_path), *llm_pair(db, first), db)
    assert first.requests and s.n_scored == s.n_sampled
    scores = {f: r["score"] for f, r in rows(db, s.run_id).items()}
    assert all(scores[j] > 0.9 for j in range(len(PLANTED_WORDS)))
    second = oracle_endpoint()
    assert score_dictionary(ScoreConfig(dict_path), *llm_pair(db, second), db).run_id == s.run_id
    assert second.requests == []
    # Even with the results gone, every call is answered from the cache.
    db.execute("delete from features")
    db.conn.commit()
    third = oracle_endpoint()
    explainer, simulator = llm_pair(db, third)
    score_dictionary(ScoreConfig(dict_path), explainer, simulator, db)
    assert third.requests == [] and explainer.client.hits > 0
    assert {f: r["score"] for f, r in rows(db, s.run_id).items()} == scores


def test_explanations_per_feature(planted, tmp_path):
    _, dict_path = planted
    db = open_db(tmp_path / "r.db")
    fake = oracle_endpoint()
    cfg = ScoreConfig(dict_path, explanations_per_feature=3, selftest=False)
    s = score_dictionary(cfg, *llm_pair(db, fake, temperature=0.7), db)
    explain_requests = [r for r in fake.requests if "summarize" in r.messages[0][1]]
    assert {r.sample_index for r in explain_requests} == {0, 1, 2}
    assert all(r.temperature > 0 for r in explain_requests)
    for r in rows(db, s.run_id).values():
        texts = json.loads(r["explanations"])
        assert len(texts) == 3 and texts[0] != texts[1] and texts[0] == texts[2]
        assert r["score_spread"] is not None and r["score_spread"] >= 0
    assert s.mean_spread > 0


def test_unusable_simulations_are_failed_and_counted(planted, tmp_path):
    _, dict_path = planted
    db = open_db(tmp_path / "r.db")
    fake = FakeClient(respond=lambda req: "commas" if "summarize" in req.messages[0][1]
                      else "[1, 2]", supports={"prompt_logprobs": False})
    s = score_dictionary(ScoreConfig(dict_path, selftest=False), *llm_pair(db, fake), db)
    assert s.n_scored == 0 and s.n_failed == s.n_sampled and math.isnan(s.mean)
    assert s.failures == (("simulation: simulator output unusable after N tries: "
                           "expected N values, got N", s.n_sampled),)
    assert all(r["score"] is None for r in rows(db, s.run_id).values())


def test_endpoint_failures_are_recorded_then_retried(planted, tmp_path):
    _, dict_path = planted
    db = open_db(tmp_path / "r.db")

    def down(request):
        raise LLMCallError("endpoint http://127.0.0.1:9/v1 unreachable")
    cfg = ScoreConfig(dict_path, selftest=False)
    broken = FakeClient(respond=down, supports={"prompt_logprobs": False, "top_logprobs": False})
    s = score_dictionary(cfg, *llm_pair(db, broken), db)
    assert s.n_failed == s.n_sampled and s.failures[0][0].startswith(CALL_FAILED)
    assert db.execute("select count(*) from llm_calls").fetchone()[0] == 0  # failures not cached
    s = score_dictionary(cfg, *llm_pair(db, oracle_endpoint()), db)
    assert s.n_scored == s.n_sampled and s.n_failed == 0


def test_sigkill_midway_then_rerun_scores_every_feature_once(tmp_path):
    # 500 features keep the run going for seconds, so the kill lands mid-way.
    store, dict_path, _ = make_planted(tmp_path, n_noise=496, d_model=512)
    db_path = tmp_path / "kill.db"
    cmd = [sys.executable, "-c", "from autointerp.cli import main; main()", "score",
           "--dict", str(dict_path), "--db", str(db_path), "--explainer", "lexical",
           "--scoring-backend", "lexical", "--no-selftest", "--n-sampled", "500"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, n_before = time.time() + 120, 0
    while time.time() < deadline and proc.poll() is None and n_before < 50:
        time.sleep(0.02)
        try:
            n_before = open_db(db_path).execute("select count(*) from features").fetchone()[0]
        except Exception:  # not created yet
            continue
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    db = open_db(db_path)
    before = {r["feature"]: r for r in db.query("select * from features")}
    assert 50 <= len(before) < 500
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = list(db.query("select * from features"))
    assert db.execute("select n_sampled from runs").fetchone()[0] == 500
    assert len(after) == len({r["feature"] for r in after}) == 500
    assert all(r["status"] == "scored" for r in after)
    for r in after:  # the features finished before the kill were not redone
        if r["feature"] in before:
            assert r == before[r["feature"]]


def test_cli_rejects_bad_options_in_one_line(planted, tmp_path):
    from typer.testing import CliRunner

    from autointerp.cli import app
    from autointerp.errors import BadInputError

    base = ["score", "--dict", str(planted[1]), "--db", str(tmp_path / "r.db")]
    for extra, message in ((["--n-sampled", "0"], "--n-sampled must be at least 1 (got 0)"),
                           (["--workers", "0"], "--workers must be at least 1")):
        result = CliRunner().invoke(app, base + extra)
        assert isinstance(result.exception, BadInputError), result.output
        assert message in str(result.exception) and "\n" not in str(result.exception)
    # Choices are Enums: the parser refuses what is not listed, before anything runs.
    for extra in (["--scoring-mode", "fast"], ["--random-from", "some"], ["--explainer", "gpt"]):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2 and "is not one of" in result.output, result.output
    assert not (tmp_path / "r.db").exists() or open_db(tmp_path / "r.db")["runs"].count == 0


def test_cli_lexical_run_prints_the_summary(planted, tmp_path):
    from typer.testing import CliRunner

    from autointerp.cli import app

    result = CliRunner().invoke(app, ["score", "--dict", str(planted[1]), "--db",
                                      str(tmp_path / "r.db"), "--explainer", "lexical",
                                      "--scoring-backend", "lexical", "--random-from", "all"],
                                env={"COLUMNS": "150"})
    assert result.exit_code == 0, result.output
    assert "Scores per dictionary" in result.output and "planted (lexical)" in result.output
    run = next(open_db(tmp_path / "r.db")["runs"].rows)
    assert json.loads(run["config"])["fragments"]["random_from"] == "all"


def test_a_rerun_links_the_newest_selftest(tmp_path):
    """A run's warning must come from the self-test made now: a rerun after the self-test
    changed (a new version, a new verdict) links the new one, not the first one's."""
    from types import SimpleNamespace as NS

    from autointerp.scoring.pipeline import _insert_run

    db = open_db(tmp_path / "r.db")
    args = dict(config={}, cfg=NS(dictionary="d"), store=NS(path="s"), dict_id="d", label="x",
                explainer=NS(name="e"), simulator=NS(name="s", mode="m"),
                scorer=NS(name="output"), fs=NS(features=(), n_skipped=0))
    _insert_run(db, "run", st=NS(id="old"), **args)
    _insert_run(db, "run", st=NS(id="new"), **args)
    assert db["runs"].get("run")["selftest_id"] == "new"
