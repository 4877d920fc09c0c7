"""The planted circuit: a tiny GPT-2 whose blocks hand the residual stream on unchanged,
with the same orthogonal dictionary at two layers. Ablating feature j at layer 0 must drop
feature j at layer 1 by 100% and every other feature by 0%, and `circuit` must find exactly
those edges, in exact and in attribution mode."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from autointerp import db as dbm
from autointerp.causal import forward
from autointerp.causal.basis import load_basis
from autointerp.causal.circuit_run import CircuitConfig, run_circuit
from autointerp.causal.circuits import Node, Site, Tracer, pad
from autointerp.dictionaries.dictionary import Dictionary
from autointerp.dictionaries.sources import dictionary_id
from autointerp.harvest.hooks import parse_hook
from autointerp.harvest.models import load_causal_lm
from tests.support.data import make_store
from tests.support.models import build_tiny_gpt2, single_torch_thread

one_thread = pytest.fixture(autouse=True)(single_torch_thread)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted-circuit")
    model_dir = build_tiny_gpt2(root / "model", passthrough=True, scale=20)
    loaded = load_causal_lm(str(model_dir), device="cpu", dtype="float32")
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, len(loaded.tokenizer), (12, 64), generator=g)
    acts = forward.run(loaded, tokens, torch.ones_like(tokens), read=parse_hook("resid.1", 2))
    store = make_store(root / "store", acts.reshape(-1, 32), acts.reshape(-1, 32),
                       tokens.reshape(-1).numpy().astype(np.int32),
                       meta={"hook": "resid.1", "layer": 1, "model": str(model_dir)})
    Q, _ = torch.linalg.qr(torch.randn(32, 32, generator=g))
    paths = []
    for layer in (0, 1):
        # a bias too small to matter keeps the two weight files (and database ids) apart
        d = Dictionary(Q.T.clone(), torch.full((32,), -1e-7 * layer), Q.T.clone(), torch.zeros(32),
                       meta={"method": "planted", "model": str(model_dir), "hook": f"resid.{layer}",
                             "layer": layer, "store": str(store)})
        paths.append(str(d.save(root / f"dict{layer}")))
    return loaded, store, paths, tokens


def test_ablation_drops_the_same_feature_fully_and_no_other(planted):
    loaded, _, paths, tokens = planted
    sites = [Site(parse_hook(f"resid.{i}", 2), load_basis(p)) for i, p in enumerate(paths)]
    ids, mask = pad([t.numpy()[:40] for t in tokens[:5]], 0)
    tracer = Tracer(loaded, sites, ids, mask, max_batch=40)
    j = int(tracer.clean[1].sum((0, 1)).argmax())
    node = Node(1, j, tracer.activation(1, j))
    cands = tracer.candidates(0)
    drops = tracer.exact_drops(node, 0, cands)
    at_j = cands.tolist().index(j)
    assert drops[at_j] == pytest.approx(1.0, abs=1e-5)
    assert drops[torch.arange(len(cands)) != at_j].abs().max() < 1e-5
    approx = tracer.attribution_drops(node, 0, cands)
    assert approx[at_j] == pytest.approx(1.0, abs=1e-4)
    assert approx[torch.arange(len(cands)) != at_j].abs().max() < 1e-4


@pytest.mark.parametrize("mode", ["exact", "attribution"])
def test_circuit_finds_exactly_the_planted_edges(planted, tmp_path, mode):
    loaded, store, paths, _ = planted
    j = 7
    db_path = tmp_path / "results.db"
    db = dbm.open_db(db_path)  # a scored explanation for the upstream node's label
    db["runs"].insert({"id": "r1", "dictionary_id": dictionary_id(paths[0])})
    db["features"].insert({"run_id": "r1", "feature": j, "status": "scored",
                           "explanation": "planted direction seven", "created_at": dbm.now()})
    cfg = CircuitConfig((paths[0],), f"{paths[1]}:{j}", str(tmp_path / "out"), mode=mode,
                        n_examples=6, context=24, device="cpu")
    result = run_circuit(cfg, db_path)
    assert [(n["layer"], n["feature"]) for n in result["nodes"]] == [(1, j), (0, j)]
    assert [(e["source"], e["target"]) for e in result["edges"]] == [(1, 0)]
    edge = result["edges"][0]
    assert edge["exact_drop"] == pytest.approx(1.0, abs=1e-5)
    assert edge["cosine"] == pytest.approx(1.0, abs=1e-5)
    up, root = result["nodes"][1], result["nodes"][0]
    assert up["label"] == "planted direction seven" and up["label_source"] == "explanation"
    assert root["label"].startswith("top tokens '")
    svg = ET.parse(tmp_path / "out" / "circuit.svg").getroot()
    texts = " ".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
    assert "drop 100% cos 1.00" in texts and "planted direction seven" in texts
    row = next(dbm.open_db(db_path)["causal_runs"].rows_where("kind = 'circuit'"))
    assert len(__import__("json").loads(row["summary"])["edges"]) == 1


def test_target_must_name_a_feature(planted, tmp_path):
    from autointerp.errors import BadInputError

    _, _, paths, _ = planted
    with pytest.raises(BadInputError, match="FOLDER:FEATURE"):
        run_circuit(CircuitConfig((paths[0],), paths[1], str(tmp_path)), tmp_path / "db")
    with pytest.raises(BadInputError, match="out of range"):
        run_circuit(CircuitConfig((paths[0],), f"{paths[1]}:99", str(tmp_path), device="cpu"),
                    tmp_path / "db")


def test_circuit_svg_renders_in_chromium(planted, tmp_path):
    import matplotlib.image

    from tests.support.browser import chromium

    _, _, paths, _ = planted
    run_circuit(CircuitConfig((paths[0],), f"{paths[1]}:3", str(tmp_path / "out"), n_examples=4,
                              context=16, device="cpu"), tmp_path / "r.db")
    shot = tmp_path / "shot.png"
    chromium(tmp_path / "out" / "circuit.svg", tmp_path, f"--screenshot={shot}", "--window-size=700,500")
    pixels = matplotlib.image.imread(shot)[..., :3]
    drawn = (pixels.mean(-1) < 0.9).mean()  # boxes, lines and text on a white page
    assert 0.005 < drawn < 0.5
    # the node boxes' fill colour (#eef3fb) is on the page
    assert (np.abs(pixels - np.array([0xee, 0xf3, 0xfb]) / 255).sum(-1) < 0.02).mean() > 0.01
