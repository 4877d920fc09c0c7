"""A whole score run through a faulty OpenAI-compatible endpoint.

Explainer and simulator (logprobs mode) are both the real OpenAIClient behind the
real CachedClient, pointed at tests/support/servers/faulty.py on 127.0.0.1. The server
answers like a competent model (the oracle of test_concurrency) except that about a
third of its answers are 429 with Retry-After, 500, 503, truncated JSON, slower than
the client's timeout, a reset connection, or a chat answer without its logprobs.
With three attempts per call some calls fail for good, so some features fail. The
test reads the server's own log (each request's body and the fault it got) against
the database: every cached call was answered in full, and a rerun asks nothing that
a succeeded feature needed.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import defaultdict

import pytest
from rich.console import Console

from autointerp.cli.score import summary_table
from autointerp.db import open_db
from autointerp.llm.cache import CachedClient
from autointerp.llm.openai_client import OpenAIClient
from autointerp.scoring.explain import LLMExplainer, explainer_messages
from autointerp.scoring.pipeline import CALL_FAILED, ScoreConfig, score_dictionary
from autointerp.scoring.scorers.simulation import LLMSimulator, chat_messages
from autointerp.types import Fragment
from tests.support.cli import random_dictionary
from tests.support.data import make_planted
from tests.support.servers.faulty import FaultPlan, FaultyServer
from tests.support.servers.oracle import OracleEndpoint

RATES = {"429": 0.08, "500": 0.05, "503": 0.05, "truncated": 0.05, "slow": 0.03,
         "reset": 0.05, "no_logprobs": 0.05}
TRANSIENT = {"429", "500", "503", "truncated", "slow", "reset"}
"""Faults the client retries (a 200 without logprobs is a whole answer to the transport)."""
RETRY_AFTER_S = 0.3
MAX_ATTEMPTS = 3
PROBES_WITHOUT_LOGPROBS = ("no_logprobs", "ok", "ok", "no_logprobs", "ok", "no_logprobs")
"""The first requests are the capability probes: the prompt-logprob probe (then the echo
probe, which this server does not speak, then the probe again), the chat-logprob probe,
and the simulator's own. Each first answer lacks its logprobs: taken at its word, the
endpoint would be recorded, for good, as giving none."""
N_FEATURES = 40
CHAT = "/chat/completions"


class RecordingServer(FaultyServer):
    """The faulty server, also keeping every request body by its sha256 (its log has the hash)."""

    def __init__(self, plan: FaultPlan):
        super().__init__(plan, answer=OracleEndpoint.answer)
        self.bodies: dict[str, dict] = {}

    def draw(self, path: str, body: bytes, authorized: bool) -> str:
        self.bodies[hashlib.sha256(body).hexdigest()] = json.loads(body)
        return super().draw(path, body, authorized)


def body_key(body: dict) -> tuple:
    """A chat request as sent on the wire, comparable with a cached CompletionRequest."""
    messages = tuple((m["role"], m["content"]) for m in body["messages"])
    return (messages, body["max_tokens"], float(body["temperature"]),
            body.get("top_logprobs") or 0, body.get("seed"))


def request_key(req: dict) -> tuple:
    """The same key from a cached request (the client sends the seed only when sampling)."""
    seed = req["sample_index"] if req["temperature"] > 0 else None
    return (tuple(map(tuple, req["messages"])), req["max_tokens"], float(req["temperature"]),
            req["top_logprobs"], seed)


@pytest.fixture(scope="module")
def dictionary(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-score")
    store, _, _ = make_planted(root, n_fragments=60)
    return random_dictionary(store, root / "random-dict", N_FEATURES)


def score(url: str, db, dictionary):
    """One run with fresh clients, as a new process would make them."""
    client = CachedClient(OpenAIClient(url, "fake", concurrency=8, timeout_s=1.0, max_attempts=MAX_ATTEMPTS,
                                       max_total_s=30), db)
    cfg = ScoreConfig(dictionary, concurrency=8, selftest=False)
    return score_dictionary(cfg, LLMExplainer(client), LLMSimulator(client, "logprobs"), db)


def retry_waits(records) -> list[float]:
    """Seconds from each 429 to the next attempt of the same call, at the server. Two
    features can ask the very same simulation (same explanation, same fragment); the
    second asks after the first gave up, so a 429 on a last attempt is left out."""
    by_body = defaultdict(list)
    for r in records:
        by_body[r.body_sha].append(r)
    waits = []
    for seq in by_body.values():
        failed = 0  # attempts of the current call that failed so far
        for a, b in zip(seq, seq[1:], strict=False):
            failed = failed + 1 if a.fault in TRANSIENT else 0
            if failed == MAX_ATTEMPTS:
                failed = 0  # the call gave up; b begins another
            elif a.fault == "429":
                waits.append(b.t - a.t)
    return waits


def whole(server: RecordingServer, record) -> bool:
    """Whether the server answered this chat request in full (leaving out logprobs that
    were not asked for is no fault)."""
    return record.path.endswith(CHAT) and (record.fault == "ok" or (
        record.fault == "no_logprobs" and not server.bodies[record.body_sha].get("logprobs")))


def feature_rows(db, run_id) -> dict[int, dict]:
    return {r["feature"]: r for r in db.query("select * from features where run_id = ?", [run_id])}


def cached_calls(db) -> list[dict]:
    """The cached chat calls (the capability probe's row left out), request and response."""
    return [{"request": json.loads(r["request"]), "response": json.loads(r["response"])}
            for r in db.query("select request, response from llm_calls")
            if "probe" not in json.loads(r["request"])]


def messages_of(row: dict) -> set[tuple]:
    """Every chat prompt a scored feature needed: its explanation and its ten simulations."""
    frags = json.loads(row["fragments"])
    shown = [Fragment(tuple(f["tokens"]), tuple(f["activations"])) for f in frags["explainer"]]
    out = {explainer_messages(shown)}
    out |= {chat_messages(row["explanation"], tuple(f["tokens"])) for f in frags["scoring"]}
    return out


def check_first_run(server, records, db, summary) -> None:
    assert {f for f in RATES if not any(r.fault == f for r in records)} == set()
    waits = retry_waits(records)
    assert waits and min(waits) >= RETRY_AFTER_S  # the client waited as long as it was asked
    # Complete: every sampled feature has one row, scored or failed with its reason.
    rows = feature_rows(db, summary.run_id)
    failed = {f: r["reason"] for f, r in rows.items() if r["status"] == "failed"}
    assert len(rows) == summary.n_sampled == summary.n_scored + summary.n_failed
    assert summary.n_failed == len(failed) > 0 and summary.n_scored > 0
    assert sum(n for _, n in summary.failures) == len(failed)
    # An endpoint that kept failing a call, or (rarely) kept dropping its logprobs.
    assert all(re.fullmatch(CALL_FAILED + r": endpoint \S+ failed after 3 attempts in .*|"
                            r"simulation: the endpoint returned no token logprobs; .*", reason)
               for reason in failed.values()), failed
    out = io.StringIO()
    Console(file=out, width=250).print(summary_table([summary]))  # what `score` prints
    s = summary
    assert re.search(rf"{s.label}\s*│\s*{s.n_scored}\s*│\s*{s.n_failed}\s*│", out.getvalue())
    caption = " ".join(out.getvalue().split())  # the caption wraps at the table's width
    assert "x llm call failed: endpoint http://N.N.N.N:N/vN failed after N attempts" in caption
    # Nothing failed is cached: each cached call's request got a full answer at the server.
    answered = {body_key(server.bodies[r.body_sha]) for r in records if whole(server, r)}
    calls = cached_calls(db)
    assert calls and all(request_key(c["request"]) in answered for c in calls)
    for c in calls:
        messages = [{"role": r, "content": t} for r, t in c["request"]["messages"]]
        assert c["response"]["text"] == OracleEndpoint.answer(messages)
        if c["request"]["top_logprobs"]:
            assert c["response"]["tokens"]  # the logprobs asked for came with it
    faulted = {body_key(server.bodies[r.body_sha]) for r in records
               if r.path.endswith(CHAT) and not whole(server, r)}
    assert any(request_key(c["request"]) in faulted for c in calls)  # retried, then cached
    (probe,) = [json.loads(r["response"]) for r in db["llm_calls"].rows
                if "probe" in json.loads(r["request"])]
    assert probe == {"prompt_logprobs_style": "vllm", "top_logprobs": True}
    assert summary.notes == "mode logprobs"


def test_score_run_through_a_faulty_endpoint(dictionary, tmp_path):
    plan = FaultPlan(rates=RATES, script=PROBES_WITHOUT_LOGPROBS, retry_after_s=RETRY_AFTER_S,
                     slow_s=2.0, seed=11, max_requests=4000, max_seconds=300)
    db = open_db(tmp_path / "faults.db")
    with RecordingServer(plan) as server:
        first = score(server.url, db, dictionary)
        n_first = server.count()
        check_first_run(server, server.log[:n_first], db, first)
        rows = feature_rows(db, first.run_id)
        cached = {request_key(c["request"]) for c in cached_calls(db)}

        server.plan = FaultPlan(max_requests=4000, max_seconds=300)  # a healthy endpoint now
        second = score(server.url, db, dictionary)
        again = [server.bodies[r.body_sha] for r in server.log[n_first:]]

    # Features lost to endpoint errors are asked for again and now score; a simulation
    # failure is a verdict on the answer, kept as it was.
    kept = {f for f, r in rows.items() if r["status"] == "failed"
            and not r["reason"].startswith(CALL_FAILED)}
    assert second.run_id == first.run_id and second.n_failed == len(kept) and again
    assert second.n_scored + len(kept) == second.n_sampled
    asked = {body_key(b) for b in again}
    assert not asked & cached  # no call that had succeeded was sent again
    scored = [f for f, r in rows.items() if r["status"] == "scored"]
    after = feature_rows(db, first.run_id)
    for f in scored:
        needed = messages_of(rows[f])
        assert needed <= {k[0] for k in cached}  # (the prompts are rebuilt right)
        assert not needed & {k[0] for k in asked}, f
        assert after[f] == rows[f]  # untouched
