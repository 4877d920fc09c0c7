"""Dictionaries by name: `hf:ORG/REPO[/PATH]` from a Hugging Face cache folder built here in
the Hub's own layout (models--ORG--REPO/{blobs,refs,snapshots}) with HF_HUB_OFFLINE=1;
an unreachable Hub in about a second; `saelens:` without sae-lens; Gemma Scope params.npz
against the published JumpReLU formula."""

import hashlib
import json
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.dictionaries.sources import dictionary_id, load_dictionaries, load_dictionary
from autointerp.errors import BadInputError
from tests.support.cli import cli_env, run_cli
from tests.support.data import GEMMA_PATH, gemma_encode, gemma_npz
from tests.support.servers.hub import SHA, fake_hub, hub_cache

PEERS = Path(__file__).parent / "fixtures" / "peers"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_gemma_scope_npz_matches_the_published_formula(tmp_path):
    path = tmp_path / "gemma-scope-2b-pt-res" / GEMMA_PATH / "params.npz"
    p = gemma_npz(path)
    x = np.random.default_rng(1).normal(0.5, 2, (64, 16)).astype(np.float32)
    d = load_dictionary(path.parent)
    want = gemma_encode(p, x)
    assert 0 < (want > 0).sum() < want.size
    np.testing.assert_allclose(d.encode(torch.from_numpy(x)).numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.decode(torch.from_numpy(want)).numpy(),
                               want @ p["W_dec"] + p["b_dec"], rtol=1e-5, atol=1e-5)
    assert (d.meta["hook"], d.meta["model"], d.meta["architecture"]) == (
        "resid.3", "google/gemma-2-2b", "jumprelu")


def test_gemma_scope_without_a_hub_path_declares_no_hook(tmp_path):
    gemma_npz(tmp_path / "mine" / "params.npz")
    assert load_dictionary(tmp_path / "mine").meta["hook"] is None
    # Attention, MLP, transcoder and embedding paths: tests/test_formats_sublayers.py.


def test_hf_names_load_from_an_offline_cache(offline_cache, tmp_path):
    gemma = tmp_path / "src" / "params.npz"
    p = gemma_npz(gemma, seed=3)
    hub_cache(offline_cache, "google/gemma-scope-2b-pt-res", {f"{GEMMA_PATH}/params.npz": gemma})
    d = load_dictionary(f"hf:google/gemma-scope-2b-pt-res/{GEMMA_PATH}")
    x = np.random.default_rng(2).normal(0, 2, (32, 16)).astype(np.float32)
    np.testing.assert_allclose(d.encode(torch.from_numpy(x)).numpy(), gemma_encode(p, x),
                               rtol=1e-5, atol=1e-5)
    assert d.meta["source"] == f"hf:google/gemma-scope-2b-pt-res/{GEMMA_PATH}"
    assert d.meta["hook"] == "resid.3"  # read from the Hub path, through the symlinked cache
    blob_sha = hashlib.sha256(gemma.read_bytes()).hexdigest()
    assert dictionary_id(f"hf:google/gemma-scope-2b-pt-res/{GEMMA_PATH}") == blob_sha

    saelens = PEERS / "saelens_gated"
    hub_cache(offline_cache, "someone/gpt2-saes", {
        f"blocks.8.hook_resid_pre/{f.name}": f for f in saelens.iterdir()})
    d = load_dictionary("hf:someone/gpt2-saes/blocks.8.hook_resid_pre")
    assert (d.meta["hook"], d.activation, d.meta["source"]) == (
        "resid.7", "gated", "hf:someone/gpt2-saes/blocks.8.hook_resid_pre")


def test_hf_sparsify_root_gives_every_hookpoint(offline_cache):
    root = PEERS / "sparsify_root"
    hub_cache(offline_cache, "EleutherAI/sae-tiny", {
        f"{sub.name}/{f.name}": f for sub in root.iterdir() for f in sub.iterdir()})
    found = load_dictionaries("hf:EleutherAI/sae-tiny")
    assert list(found) == ["hf:EleutherAI/sae-tiny/layers.1", "hf:EleutherAI/sae-tiny/layers.2.mlp"]
    assert [d.meta["hook"] for d in found.values()] == ["resid.1", "mlp.2"]
    assert load_dictionary("hf:EleutherAI/sae-tiny/layers.1").k == 5


def test_cli_inspect_reads_hf_names(offline_cache):
    saelens = PEERS / "saelens_topk_rescale"
    hub_cache(offline_cache, "someone/topk", {f"sae/{f.name}": f for f in saelens.iterdir()})
    done = run_cli(["inspect", "hf:someone/topk/sae"],
                   env=cli_env(HF_HUB_CACHE=str(offline_cache)))
    assert done.returncode == 0, done.stderr
    assert "resid_mid.2" in done.stdout and "saelens" in done.stdout


def test_hf_names_download_only_their_path_then_work_offline(tmp_path, monkeypatch):
    root = PEERS / "sparsify_root"
    files = {f"{sub.name}/{f.name}": f.read_bytes() for sub in root.iterdir() for f in sub.iterdir()}
    server, served = fake_hub("EleutherAI/sae-tiny", files)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub fixes its offline flag at import; an earlier test may have set it.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    try:
        d = load_dictionary("hf:EleutherAI/sae-tiny/layers.2.mlp")
    finally:
        server.stop()
    assert (d.meta["hook"], d.k) == ("mlp.2", 6)
    assert served and all(name.startswith("layers.2.mlp/") for name in served)
    assert (tmp_path / "hf" / "models--EleutherAI--sae-tiny" / "snapshots" / SHA).is_dir()
    # The server is gone: the same name now loads from the cache, after the short probe.
    assert load_dictionary("hf:EleutherAI/sae-tiny/layers.2.mlp").k == 6


def test_offline_and_not_cached_is_one_line(offline_cache):
    with pytest.raises(BadInputError, match="HF_HUB_OFFLINE is set, and nobody/nothing is not "
                                            "in the Hugging Face cache") as e:
        load_dictionary("hf:nobody/nothing/layer_1")
    assert "\n" not in str(e.value)
    with pytest.raises(BadInputError, match="is not a Hub name"):
        load_dictionary("hf:just-a-name")


@pytest.mark.parametrize("listening", [False, True])
def test_unreachable_hub_fails_in_about_a_second(tmp_path, monkeypatch, listening):
    """Connection refused, and a server that accepts but never answers (the slow case)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    if listening:
        server.listen(8)
    else:
        server.close()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    import httpx  # noqa: F401 - imported before the clock starts: time the probe, not imports
    import huggingface_hub  # noqa: F401

    start = time.monotonic()
    try:
        with pytest.raises(BadInputError, match=f"Hub at http://127.0.0.1:{port} is unreachable") as e:
            load_dictionary("hf:EleutherAI/sae-pythia-70m-32k/layers.3")
    finally:
        server.close()
    elapsed = time.monotonic() - start
    assert elapsed < 4 and "\n" not in str(e.value)
    if listening:  # it really waited for an answer, for the short timeout only
        assert "timed out" in str(e.value) and elapsed >= 0.9


def test_unreachable_hub_falls_back_to_the_cache(tmp_path, monkeypatch):
    hub_cache(tmp_path / "hf", "someone/topk", {
        f"sae/{f.name}": f for f in (PEERS / "saelens_topk").iterdir()})
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert load_dictionary("hf:someone/topk/sae").k == 5


def test_saelens_names_need_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sae_lens", None)  # as if not installed: import fails
    with pytest.raises(BadInputError, match=r"needs sae-lens: pip install 'autointerp\[saelens\]'"):
        load_dictionary("saelens:gpt2-small-res-jb/blocks.8.hook_resid_pre")


def test_unknown_architecture_is_one_line(tmp_path):
    folder = tmp_path / "abs"
    shutil.copytree(PEERS / "saelens_topk", folder)
    cfg = (folder / "cfg.json").read_text().replace('"architecture": "topk"',
                                                    '"architecture": "abstopk"')
    (folder / "cfg.json").write_text(cfg)
    with pytest.raises(BadInputError, match="sae-lens architecture 'abstopk' is not supported") as e:
        load_dictionary(folder)
    assert "\n" not in str(e.value)


def test_score_runs_on_a_hub_dictionary(offline_cache, tmp_path):
    """The whole scoring flow on an `hf:` name from the offline cache (a sae-lens folder),
    scored by the lexical explainer and simulator; the hook comes from its cfg.json."""
    from autointerp.db import open_db
    from autointerp.scoring.fragments import FragmentConfig
    from autointerp.scoring.pipeline import ScoreConfig, score_dictionary
    from autointerp.scoring.scorers.lexical import LexicalExplainer, LexicalSimulator
    from tests.support.data import make_planted

    store, _, _ = make_planted(tmp_path / "planted")
    # The store is as the SAE declares (gpt2, blocks.3.hook_resid_pre = resid.2): score checks it.
    meta = json.loads((store / "metadata.json").read_text())
    (store / "metadata.json").write_text(json.dumps({**meta, "model": "gpt2", "hook": "resid.2"}))
    hub_cache(offline_cache, "someone/gpt2-saes", {
        f"blocks.2.hook_resid_pre/{f.name}": f for f in (PEERS / "saelens_standard").iterdir()})
    db = open_db(tmp_path / "r.db")
    spec = "hf:someone/gpt2-saes/blocks.2.hook_resid_pre"
    s = score_dictionary(ScoreConfig(spec, store, FragmentConfig(n_features=3), selftest=False),
                         LexicalExplainer(), LexicalSimulator(), db)
    assert s.n_scored == 3 and s.n_failed == 0
    row = db["dictionaries"].get(dictionary_id(spec))
    assert (row["method"], row["hook"], row["path"]) == ("saelens", "resid.2", spec)


def test_a_converted_saelens_name_loads_without_sae_lens(tmp_path, monkeypatch):
    """`saelens:` names are converted once into our format; later loads need neither
    sae-lens nor the Hub."""
    monkeypatch.setenv("AUTOINTERP_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "sae_lens", None)
    d = load_dictionary(PEERS / "saelens_topk_rescale")
    d.save(tmp_path / "saelens" / "some-release" / "blocks.3.hook_resid_post")
    back = load_dictionary("saelens:some-release/blocks.3.hook_resid_post")
    assert back.meta["source"] == "saelens:some-release/blocks.3.hook_resid_post"
    assert torch.equal(back.W_enc, d.W_enc) and back.k == 5
    with pytest.raises(BadInputError, match="needs sae-lens"):
        load_dictionary("saelens:some-release/blocks.4.hook_resid_post")
