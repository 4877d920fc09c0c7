"""The API key never leaves the environment.

A recognisable key is planted in the variable named by --api-key-env. The real
`autointerp` command then scores through a local OpenAI-compatible server that
requires that key (some answers are 400s that echo the Authorization header back),
compares and reports; then fails against a server that rejects the key with a 401
echoing it, and against an unreachable endpoint, each with --debug off and on. Every
run logs at DEBUG (the project's loggers and aiohttp's) to stderr.
The key's bytes are then searched for in every output: stdout and stderr of every
run, and every file under the test's folder, which holds the database with its
-wal/-shm files, the results folder (table.md, table.csv, differences.md, scores.png,
report.html), the activation store and the dictionary.
"""

from __future__ import annotations

import pytest

from tests.support.cli import closed_port, error_line
from tests.support.data import make_planted
from tests.support.secrets import KEY_ENV, SECRET, files_under, run, score_args
from tests.support.servers.faulty import FaultPlan, FaultyServer
from tests.support.servers.oracle import OracleEndpoint


class EchoingServer(FaultyServer):
    """Requires the key, and answers the first explainer request with a 400 whose message
    echoes the Authorization header (so one feature fails, its reason quoting the server)."""

    echoed = False

    def draw(self, path: str, body: bytes, authorized: bool) -> str:
        fault = super().draw(path, body, authorized)
        if fault == "ok" and not self.echoed and b"summarize" in body:
            self.echoed = True
            return "400"
        return fault


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("secrets")
    store, dictionary, _ = make_planted(root)
    return root, dictionary


def test_planted_key_appears_in_no_output(planted):
    root, dictionary = planted
    db, results, outputs = root / "results" / "secrets.db", root / "results", {}
    with EchoingServer(FaultPlan(api_key=SECRET, max_seconds=200), OracleEndpoint.answer) as server:
        ok = run(score_args(dictionary, db, server.url), root, outputs, "score")
    assert ok.returncode == 0, ok.stderr
    assert server.echoed and server.count("401") == 0  # the key was sent, and echoed once
    for name, args in (("compare", ["compare", "--db", db, "--out", results]),
                       ("report", ["report", "--db", db, "--out", results / "report.html"])):
        result = run(args, root, outputs, name)
        assert result.returncode == 0, result.stderr

    for debug in (False, True):
        with FaultyServer(FaultPlan(api_key="sk-the-right-one", echo_auth=True)) as server:
            rejected = run(score_args(dictionary, db, server.url, debug), root, outputs,
                           f"401 debug={debug}")
        assert server.count("401") == 1  # its message held the key
        gone = run(score_args(dictionary, db, f"http://127.0.0.1:{closed_port()}/v1", debug),
                   root, outputs, f"unreachable debug={debug}")
        for result in (rejected, gone):
            if debug:
                assert result.returncode == 1 and "Traceback" in result.stderr
            else:
                error_line(result)
    assert "rejected the API key (401) from $" + KEY_ENV in outputs["401 debug=False stderr"]

    files = files_under(root)
    expected = {"results/table.md", "results/table.csv", "results/differences.md",
                "results/scores.png", "results/report.html", "results/secrets.db",
                "store/metadata.json", "dict/config.json", "dict/dictionary.safetensors"}
    assert expected <= set(files), sorted(files)
    leaks = [name for name, text in outputs.items() if SECRET in text]
    leaks += [name for name, data in files.items() if SECRET.encode() in data]
    assert leaks == []
    # The search sees what is there: the server's echo, scrubbed, in the failed feature's
    # reason; the debug logs of every request.
    assert b"bad request from Bearer ***" in b"".join(
        data for name, data in files.items() if name.startswith("results/secrets.db"))
    assert "DEBUG" in outputs["score stderr"] and "/completions: HTTP 200" in outputs["score stderr"]
