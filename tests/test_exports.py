"""Results that travel: a scored run exported as Neuronpedia upload batches (checked
against the neuronpedia client's own upload_batch and the upload's limits) and read
back by `score --explanations` to the same scores; Neuronpedia's public export layout
scored end to end; SAEBench's eval output shape."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.db import open_db
from autointerp.errors import BadInputError
from tests.support.data import make_planted

FIXTURE = Path(__file__).parent / "fixtures" / "neuronpedia" / "test-model" / "0-res-test"
LEXICAL = ["--explainer", "lexical", "--scoring-backend", "lexical", "--no-selftest",
           "--n-sampled", "5"]


def cli(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None:
        raise result.exception
    return result.output


def scores(db: Path, run_id: str) -> dict[int, tuple]:
    con = sqlite3.connect(db)
    rows = con.execute("select feature, status, score, score_top, score_random from features "
                       "where run_id = ?", [run_id]).fetchall()
    con.close()
    return {r[0]: r[1:] for r in rows}


def runs(db: Path) -> dict[str, tuple]:
    """Run id -> (scorer, explainer), oldest first."""
    con = sqlite3.connect(db)
    rows = con.execute("select id, scorer, explainer from runs order by rowid").fetchall()
    con.close()
    return {r[0]: r[1:] for r in rows}


def copy_db(db: Path, tmp_path: Path) -> Path:
    """A copy of the shared database that a test may change."""
    copy = tmp_path / "copy.db"
    sqlite3.connect(db).execute(f"vacuum into '{copy}'")
    return copy


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A planted dictionary scored lexically by simulation and detection."""
    root = tmp_path_factory.mktemp("exports")
    _, dict_path, _ = make_planted(root)
    db = root / "results.db"
    cli("score", "--dict", dict_path, "--db", db, *LEXICAL, "--scorer", "simulation",
        "--scorer", "detection")
    ids = {scorer: run for run, (scorer, _) in runs(db).items()}
    return dict_path, db, ids


def test_round_trip_through_neuronpedia_batches_gives_the_same_scores(scored, tmp_path):
    dict_path, db, ids = scored
    out = tmp_path / "np"
    cli("export", "neuronpedia", "--db", db, "--run", ids["simulation"][:10], "--out", out,
        "--no-logits")
    assert sorted(p.name for p in out.iterdir()) == ["batch-0.json", "manifest.json",
                                                     "scores.jsonl"]
    cli("score", "--dict", dict_path, "--db", db, *LEXICAL, "--explanations", out)
    given = [r for r, (scorer, expl) in runs(db).items() if expl == "given:ours"]
    assert len(given) == 1
    before, after = scores(db, ids["simulation"]), scores(db, given[0])
    assert len(before) == 5 and after == before
    assert any(s[1] > 0.9 for s in after.values())  # the planted words really score


def test_batches_are_what_the_neuronpedia_client_sends(scored, tmp_path, monkeypatch):
    from neuronpedia.requests.feature_request import FeatureRequest

    from autointerp.results.neuronpedia import client_features
    from autointerp.results.neuronpedia_schema import batch_errors

    _, db, ids = scored
    cli("export", "neuronpedia", "--db", db, "--run", ids["simulation"], "--out", tmp_path / "np",
        "--no-logits")
    batch = json.loads((tmp_path / "np" / "batch-0.json").read_text())
    assert batch_errors(batch) == []
    model, source = batch["modelId"], batch["source"]
    assert (model, source) == ("test-model", "0-autointerp-planted")
    features = client_features(batch)
    sent = {}
    monkeypatch.setattr(FeatureRequest, "send_request",
                        lambda self, method, uri, json: sent.update(json) or {"ok": True})
    FeatureRequest(api_key="not-a-key").upload_batch(model, source, features)
    assert sent == batch
    first = batch["features"][0]
    assert 0 < first["density"] <= 1
    assert first["explanations"][0]["methodName"] == "autointerp-lexical"
    assert all(len(a["tokens"]) == len(a["values"]) == 64 for a in first["activations"])
    fractions = [a["quantileFraction"] for a in first["activations"]]
    assert all(0 < q <= 1 for q in fractions) and len(first["activations"]) > 20
    rows = [json.loads(line) for line in (tmp_path / "np" / "scores.jsonl").read_text().splitlines()]
    assert {r["explanationScoreTypeName"] for r in rows} == {"autointerp-simulation"}
    assert {int(r["index"]) for r in rows} == {f["index"] for f in batch["features"]}
    details = json.loads(rows[0]["jsonDetails"])
    assert len(details["scoring"]) == 10 and len(details["simulations"][0]) == 10


def _valid_feature(i: int) -> dict:
    return {"index": i, "density": 0.01, "topLogits": [{"token": "a", "value": 1.0}],
            "bottomLogits": None,
            "explanations": [{"text": "x", "methodName": "m", "modelName": "n"}],
            "activations": [{"tokens": ["a", "b"], "values": [0.0, 1.0], "quantileMax": 1.0,
                             "quantileMin": 0.5, "quantileFraction": 0.1}]}


@pytest.mark.parametrize("breaks, expected", [
    (lambda b: b["features"].extend(_valid_feature(i) for i in range(1, 129)), "too long"),
    (lambda b: b["features"][0].update(topLogits=[{"token": "t", "value": 0.1}] * 21),
     "too long"),
    (lambda b: b["features"][0]["explanations"][0].update(text="x" * 513), "too long"),
    (lambda b: b["features"][0]["activations"][0].update(tokens=["t"] * 1025,
                                                         values=[0.0] * 1025), "too long"),
    (lambda b: b["features"][0]["activations"][0].update(values=[1.0]), "2 tokens but 1 values"),
    (lambda b: b["features"][0]["activations"][0].update(tokens=["a", 7]), "not a string"),
    (lambda b: b["features"][0]["activations"][0].update(values=[0.0, "1"]), "not a number"),
    (lambda b: b["features"].append(_valid_feature(0)), "index appears twice"),
    (lambda b: b.update(modelId="GPT2"), "does not match"),
])
def test_the_upload_limits_are_checked(breaks, expected):
    from autointerp.results.neuronpedia_schema import batch_errors

    batch = {"modelId": "gpt2-small", "source": "6-res-jb", "features": [_valid_feature(0)]}
    assert batch_errors(batch) == []
    breaks(batch)
    errors = batch_errors(batch)
    assert errors and any(expected in e for e in errors), errors


def test_logits_come_from_the_decoder_at_most_20(scored, tiny_llama_dir, tmp_path):
    import torch

    from autointerp.dictionaries.dictionary import Dictionary

    _, db, ids = scored
    d = 64  # the tiny Llama's width: its unembedding reads this dictionary's decoder
    W = torch.randn(16, d, generator=torch.Generator().manual_seed(0))
    path = Dictionary(W.clone(), torch.zeros(16), W, torch.zeros(d),
                      meta={"method": "test", "model": str(tiny_llama_dir), "hook": "resid.0",
                            "layer": 0}).save(tmp_path / "lens-dict")
    copy = copy_db(db, tmp_path)
    con = sqlite3.connect(copy)
    con.execute("update dictionaries set path = ?", [str(path)])
    con.commit()
    con.close()
    cli("export", "neuronpedia", "--db", copy, "--run", ids["simulation"], "--out", tmp_path / "np")
    feature = json.loads((tmp_path / "np" / "batch-0.json").read_text())["features"][0]
    assert len(feature["topLogits"]) == len(feature["bottomLogits"]) == 20
    assert feature["topLogits"][0]["value"] > 0 > feature["bottomLogits"][0]["value"]


def test_neuronpedia_public_export_is_scored_end_to_end(scored, tmp_path):
    dict_path, _, _ = scored
    db = tmp_path / "public.db"
    with pytest.raises(BadInputError, match="feature 0 is explained twice"):
        cli("score", "--dict", dict_path, "--db", db, *LEXICAL, "--explanations", FIXTURE)
    assert not db.exists()
    out = cli("score", "--dict", dict_path, "--db", db, *LEXICAL, "--explanations", FIXTURE,
              "--explanations-source", "oai_token-act-pair/gpt-4o-mini")
    assert "1 sampled features have no explanation" in out and ": 4" in out
    (run, _), = [(r, v) for r, v in runs(db).items()]
    got = scores(db, run)
    assert sorted(got) == [0, 1, 2, 3]  # feature 4 has no explanation: listed, not scored
    assert all(status == "scored" and score > 0.9 for status, score, *_ in got.values())


def _np_rows(path: Path, rows: list[dict]) -> Path:
    import gzip

    (path / "explanations").mkdir(parents=True)
    base = {"modelId": "test-model", "layer": "0-res-test", "typeName": "t",
            "explanationModelName": "m"}
    data = "".join(json.dumps({**base, **r}) + "\n" for r in rows).encode()
    (path / "explanations" / "batch-0.jsonl.gz").write_bytes(gzip.compress(data))
    return path


@pytest.mark.parametrize("rows, expected", [
    ([{"index": "0", "description": "x", "modelId": "gpt2-small", "layer": "6-res-jb"}],
     "explains gpt2-small/6-res-jb, but dictionary"),
    ([{"index": "0", "description": "x", "layer": "3-res-test"}], "explains test-model/3-res-test"),
    ([{"index": "0"}], "no description field"),
    ([{"index": "0", "description": "  "}], "the explanation is empty"),
    ([{"index": "zero", "description": "x"}], "is not a whole number"),
    ([{"index": "16", "description": "x"}], "explains feature 16, but dictionary"),
])
def test_bad_explanation_files_are_one_line_errors(scored, tmp_path, rows, expected):
    dict_path, _, _ = scored
    db = tmp_path / "bad.db"
    with pytest.raises(BadInputError) as e:
        cli("score", "--dict", dict_path, "--db", db, *LEXICAL, "--explanations",
            _np_rows(tmp_path / "np", rows))
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert not db.exists()  # nothing written


def test_an_export_of_another_dictionary_is_refused(scored, tmp_path):
    from autointerp.scoring.given import read_explanations

    _, db, ids = scored
    cli("export", "neuronpedia", "--db", db, "--run", ids["simulation"], "--out", tmp_path / "np",
        "--no-logits")
    meta = {"method": "topk", "model": "test-model", "hook": "resid.0", "layer": 0}
    with pytest.raises(BadInputError, match="explains test-model/0-autointerp-planted, but"):
        read_explanations(tmp_path / "np", meta)
    assert read_explanations(tmp_path / "np", {**meta, "method": "planted"}).layout == "ours"


def test_a_bad_file_is_one_error_line_from_the_command(scored, tmp_path):
    from tests.support.cli import error_line, run_cli

    dict_path, _, _ = scored
    bad, db = tmp_path / "expl.csv", tmp_path / "none.db"
    bad.write_bytes(b"index,text\n0,caf\xe9\n")
    line = error_line(run_cli(["score", "--dict", dict_path, "--db", db, *LEXICAL,
                               "--explanations", bad]))
    assert line == f"{bad} is not UTF-8 text (byte 0xe9 at offset 16)"
    assert not db.exists()


def test_explainer_names_for_neuronpedia():
    from autointerp.results.neuronpedia import explainer_names

    assert explainer_names("llm:inprocess:smollm2-135m") == ("oai_token-act-pair", "smollm2-135m")
    assert explainer_names("llm:openai:http://h/v1 GPT-4o") == ("oai_token-act-pair", "gpt-4o")
    assert explainer_names("lexical") == ("autointerp-lexical", "lexical")


def test_non_utf8_table_is_refused(scored, tmp_path):
    from autointerp.scoring.given import read_explanations

    bad = tmp_path / "expl.csv"
    bad.write_bytes(b"index,text\n0,caf\xe9\n")
    with pytest.raises(BadInputError, match=r"not UTF-8 text \(byte 0xe9 at offset 16\)"):
        read_explanations(bad, {"model": "test-model", "layer": 0})


def test_tables_and_delphi_folders(tmp_path):
    from autointerp.scoring.given import read_explanations

    meta = {"model": "test-model", "hook": "resid.0", "layer": 0}
    (tmp_path / "t.csv").write_text('\ufeffindex,text,source\n3,"the word ""sea""",me\n0,the,\n',
                                    encoding="utf-8")
    got = read_explanations(tmp_path / "t.csv", meta)
    assert got.texts == {0: "the", 3: 'the word "sea"'} and got.sources[3] == "me"
    (tmp_path / "t.jsonl").write_text('{"index": 1, "text": "commas"}\n{"index": 1, "text": "x"}\n')
    with pytest.raises(BadInputError, match="feature 1 is explained twice"):
        read_explanations(tmp_path / "t.jsonl", meta)
    delphi = tmp_path / "delphi"
    delphi.mkdir()
    for hook, i, text in (("layers.0", 2, "the word and"), ("layers.0", 7, "commas"),
                          ("layers.3", 2, "other layer")):
        (delphi / f"{hook}_latent{i}.txt").write_text(json.dumps(text))
    got = read_explanations(delphi, meta)
    assert got.layout == "delphi" and got.texts == {2: "the word and", 7: "commas"}
    with pytest.raises(BadInputError, match="layers.0 \\(resid.0\\), layers.3 \\(resid.3\\)"):
        read_explanations(delphi, {**meta, "hook": "mlp.0"})


def test_saebench_output_has_its_fields_and_a_chance_corrected_score(scored, tmp_path):
    from autointerp.results.saebench import FLOOR

    _, db, ids = scored
    out = tmp_path / "saebench" / "autointerp.json"
    cli("export", "saebench", "--db", db, "--run", ids["detection"], "--out", out)
    doc = json.loads(out.read_text())
    assert doc["eval_type_id"] == "autointerp" and doc["sae_lens_id"] is None
    metrics = doc["eval_result_metrics"]["autointerp"]
    latents = doc["eval_result_unstructured"]["latents"]
    assert latents and doc["eval_config"]["n_latents"] == len(latents)
    for lat in latents.values():
        expected = (4 * lat["recall"] + 10 * lat["specificity"]) / 14
        assert lat["score"] == pytest.approx(expected)
        assert lat["score_chance_corrected"] == pytest.approx((expected - FLOOR) / (1 - FLOOR))
    mean = sum(lat["score"] for lat in latents.values()) / len(latents)
    assert metrics["autointerp_score"] == pytest.approx(mean)
    assert metrics["autointerp_score_chance_corrected"] == pytest.approx((mean - FLOOR) / (1 - FLOOR))
    with pytest.raises(BadInputError, match="SAEBench's autointerp score is a detection score"):
        cli("export", "saebench", "--db", db, "--run", ids["simulation"], "--out", out)
    with pytest.raises(BadInputError, match=f"no run 'zz' in the database; its runs: "
                                            f"{ids['simulation'][:12]} planted"):
        cli("export", "saebench", "--db", db, "--run", "zz", "--out", out)


def test_report_links_features_to_their_neuronpedia_pages(scored, tmp_path):
    from autointerp.dictionaries.neuronpedia import neuronpedia_id
    from autointerp.results.report import build_report

    _, db, _ = scored
    copy = copy_db(db, tmp_path)
    database = open_db(copy)
    page, _ = build_report(database, decoder_tokens=False)
    assert "neuronpedia.org" not in page  # our own dictionary has no page
    meta = {"method": "saelens", "hyperparameters": {"metadata": {
        "neuronpedia_id": "gpt2-small/0-res-jb"}}}
    assert neuronpedia_id(meta) == "gpt2-small/0-res-jb"
    database.execute("update dictionaries set meta = ?", [json.dumps(meta)])
    database.conn.commit()
    page, _ = build_report(database, decoder_tokens=False)
    assert 'href="https://www.neuronpedia.org/gpt2-small/0-res-jb/3"' in page


def test_a_saelens_dictionary_carries_its_neuronpedia_id(tmp_path):
    import shutil

    from autointerp.dictionaries.neuronpedia import neuronpedia_id
    from autointerp.dictionaries.sources import load_dictionary
    from autointerp.scoring.given import read_explanations

    folder = Path(shutil.copytree(Path(__file__).parent / "fixtures" / "peers" / "saelens_jumprelu",
                                  tmp_path / "sae"))
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"]["neuronpedia_id"] = "gpt2-small/1-res-test"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    meta = load_dictionary(folder).meta
    assert neuronpedia_id(meta) == "gpt2-small/1-res-test"
    rows = [{"index": "0", "description": "x", "modelId": "gpt2-small", "layer": "1-res-test"}]
    assert read_explanations(_np_rows(tmp_path / "ok", rows), meta).texts == {0: "x"}
    rows[0]["layer"] = "1-res-other"
    with pytest.raises(BadInputError, match="is gpt2-small/1-res-test"):
        read_explanations(_np_rows(tmp_path / "other", rows), meta)


def test_a_long_explanation_is_cut_to_the_upload_limit(scored, tmp_path):
    _, db, ids = scored
    copy = copy_db(db, tmp_path)
    con = sqlite3.connect(copy)
    con.execute("update features set explanation = ? where run_id = ? and feature = 0",
                ['tokens "the" (10) ' + "x" * 600, ids["simulation"]])
    con.commit()
    con.close()
    out = cli("export", "neuronpedia", "--db", copy, "--run", ids["simulation"], "--out",
              tmp_path / "np", "--no-logits")
    assert "1 explanations cut to 512" in " ".join(out.split())
    feature = json.loads((tmp_path / "np" / "batch-0.json").read_text())["features"][0]
    text = feature["explanations"][0]["text"]
    assert feature["index"] == 0 and len(text) == 512 and text.endswith("…")


def test_saelens_names_are_looked_up_in_its_table(monkeypatch):
    """`saelens:RELEASE/SAE_ID` without an id in its config: sae-lens's bundled table (a
    stand-in module here, with the table's shape; sae-lens is an optional extra)."""
    import sys
    import types

    from autointerp.dictionaries.neuronpedia import neuronpedia_id

    entry = types.SimpleNamespace(neuronpedia_id={"blocks.6.hook_resid_pre": "gpt2-small/6-res-jb"})
    module = types.ModuleType("sae_lens.loading.pretrained_saes_directory")
    module.get_pretrained_saes_directory = lambda: {"gpt2-small-res-jb": entry}
    monkeypatch.setitem(sys.modules, "sae_lens", types.ModuleType("sae_lens"))
    monkeypatch.setitem(sys.modules, "sae_lens.loading", types.ModuleType("sae_lens.loading"))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert neuronpedia_id({"source": "saelens:gpt2-small-res-jb/blocks.6.hook_resid_pre"}) \
        == "gpt2-small/6-res-jb"
    assert neuronpedia_id({"source": "saelens:gpt2-small-res-jb/blocks.7.hook_resid_pre"}) is None
    assert neuronpedia_id({"source": "hf:org/repo"}) is None
