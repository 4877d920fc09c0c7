"""One name per concept on the command line: the scoring model's options are `--scoring-*`,
sampled and planted counts have their own names, choices are listed in the help. Every
old spelling still works, hidden, with a deprecation line."""

from __future__ import annotations

import pytest

from tests.support.cli import run_main
from tests.support.data import make_planted
from tests.support.servers.oracle import OracleEndpoint

DEPRECATED = "is deprecated; use"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted(tmp_path_factory.mktemp("names"))


def deprecations(err: str) -> set[str]:
    return {line.split()[1] for line in err.splitlines() if DEPRECATED in line}


def test_old_scoring_spellings_still_score(planted, tmp_path, capsys):
    store, dictionary, _ = planted
    with OracleEndpoint() as endpoint:
        code, out, err = run_main(
            ["score", "--dict", dictionary, "--db", tmp_path / "r.db", "--n-features", "3",
             "--explainer", "openai", "--explainer-model", "oracle", "--base-url", endpoint.url,
             "--simulator", "openai", "--simulator-model", "oracle", "--simulator-base-url",
             endpoint.url, "--simulator-mode", "json", "--no-selftest"], capsys)
        assert endpoint.requests > 0
    assert code == 0, err
    assert deprecations(err) == {"--simulator", "--simulator-model", "--simulator-base-url",
                                 "--simulator-mode", "--n-features"}
    assert "Scores per dictionary" in out


def test_old_selftest_spellings(planted, tmp_path, capsys):
    store, _, _ = planted
    code, out, err = run_main(["selftest", "--acts", store, "--db", tmp_path / "s.db",
                               "--simulator", "lexical", "--n-features", "3"], capsys)
    assert code == 0, err
    assert deprecations(err) == {"--simulator", "--n-features"}
    assert "self-test" in out


def test_old_train_tokens_spelling(planted, tmp_path, capsys):
    store, _, _ = planted
    code, _, err = run_main(["train", "--acts", store, "--arch", "topk", "--k", "2",
                             "--ratio", "1", "--tokens", "512", "--batch-size", "256",
                             "--out", tmp_path / "sae", "--device", "cpu"], capsys)
    assert code == 0, err
    assert deprecations(err) == {"--tokens"}


def test_old_demo_spellings_reach_its_config(monkeypatch, capsys):
    seen = {}

    def fake_run(cfg, console):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr("autointerp.demo.run_demo", fake_run)
    code, _, err = run_main(["demo", "--n-features", "7", "--simulator-mode", "json"], capsys)
    assert code == 0, err
    assert seen["cfg"].n_features == 7 and seen["cfg"].simulator_mode == "json"
    assert deprecations(err) == {"--n-features", "--simulator-mode"}


def test_old_and_new_spelling_disagreeing_is_refused(planted, tmp_path, capsys):
    _, dictionary, _ = planted
    code, _, err = run_main(["score", "--dict", dictionary, "--db", tmp_path / "r.db",
                             "--scoring-backend", "openai", "--simulator", "lexical"], capsys)
    assert code == 1 and "--simulator (deprecated) and --scoring-backend disagree" in err


def test_help_groups_options_and_lists_choices(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_main(["score", "--help"], capsys)
    assert code == 0
    for panel in ("Inputs", "Explainer", "Scoring model", "Scorers", "Run"):
        assert panel in out
    assert "inprocess|openai|lexical" in out and "auto|all-at-once|logprobs|json" in out
    assert "--simulator" not in out and "--n-features" not in out  # hidden aliases


def test_a_bad_choice_is_one_line(capsys):
    code, _, err = run_main(["train", "--acts", "x", "--arch", "gated", "--out", "y"], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: Invalid value for '--arch'")
