"""Dictionaries from other tools as a user meets them, through the real command line: `score --dict` on a sparsify
checkpoint root and on a sae-lens folder harvests each dictionary's own (translated) hook
point with its own input transform, and every bad input of the issue ends in one line with
exit status 1."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.dictionaries.sources import load_dictionary
from autointerp.errors import BadInputError
from autointerp.harvest.store import ActivationStore
from tests.support.cli import cli_env, error_line, run_cli
from tests.support.models import build_tiny, corpus_text, single_torch_thread

one_torch_thread = pytest.fixture(autouse=True)(single_torch_thread)
PEERS = Path(__file__).parent / "fixtures" / "peers"
D_MODEL, N_FEATURES = 32, 64  # the tiny GPT-2's width
LEXICAL = ["--explainer", "lexical", "--scoring-backend", "lexical", "--no-selftest", "--n-sampled", "2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny GPT-2 in a folder named gpt2 (so `gpt2-small` is it) and a ~40k-token corpus."""
    root = tmp_path_factory.mktemp("dict-cli")
    model = build_tiny("gpt2", root / "gpt2")
    corpus = root / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": p}) for p in
                                corpus_text(0, n_paragraphs=200).split("\n\n")) + "\n")
    return {"root": root, "model": model, "corpus": corpus}


def random_weights(seed: int) -> torch.Tensor:
    return torch.randn(N_FEATURES, D_MODEL, generator=torch.Generator().manual_seed(seed)) / D_MODEL ** 0.5


def sparsify_root(root: Path, model: str) -> Path:
    """A checkpoint root as sparsify's trainer writes it: the run's config.json and one
    folder per hookpoint, each cfg.json + sae.safetensors (weights in sparsify's names)."""
    for i, (hookpoint, k) in enumerate((("layers.1", 4), ("layers.2.mlp", 6))):
        folder = root / hookpoint
        folder.mkdir(parents=True)
        W = random_weights(i)
        save_file({"encoder.weight": W, "encoder.bias": torch.zeros(N_FEATURES),
                   "W_dec": W.clone(), "b_dec": torch.zeros(D_MODEL)}, str(folder / "sae.safetensors"))
        (folder / "cfg.json").write_text(json.dumps({
            "activation": "topk", "expansion_factor": 2, "normalize_decoder": True,
            "num_latents": N_FEATURES, "k": k, "multi_topk": False, "skip_connection": False,
            "transcode": False, "d_in": D_MODEL}))
    (root / "config.json").write_text(json.dumps({"model": model, "hookpoints": ["layers.1", "layers.2.mlp"]}))
    return root


def saelens_folder(path: Path, hook_name: str, kwargs: dict) -> Path:
    W = random_weights(7)
    path.mkdir(parents=True)
    save_file({"W_enc": W.T.contiguous(), "b_enc": torch.zeros(N_FEATURES), "W_dec": W.clone(),
               "b_dec": torch.zeros(D_MODEL)}, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps({
        "architecture": "standard", "d_in": D_MODEL, "d_sae": N_FEATURES,
        "apply_b_dec_to_input": True, "normalize_activations": "none",
        "metadata": {"model_name": "gpt2-small", "hook_name": hook_name,
                     "model_from_pretrained_kwargs": kwargs, "sae_lens_version": "6.54.12"}}))
    return path


def score(world, cwd, *args, db_name: str = "db.sqlite") -> tuple:
    """`score ... --model GPT2 --corpus C` run in `cwd`, where it harvests into data/."""
    db = cwd / db_name
    result = run_cli(["score", *args, "--model", world["model"], "--corpus", world["corpus"],
                      "--tokens", 30000, "--db", db, *LEXICAL], cwd=cwd)
    return result, db


def runs(db: Path) -> list[dict]:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT r.config, r.n_sampled, d.hook FROM runs r "
                           "JOIN dictionaries d ON d.id = r.dictionary_id").fetchall()
    return [{**json.loads(c), "n_sampled": n, "hook": h} for c, n, h in rows]


def store_meta(run: dict, cwd: Path) -> dict:
    return ActivationStore(cwd / run["store_path"]).meta


def test_score_a_sparsify_root_harvests_every_hookpoint(world, tmp_path):
    root = sparsify_root(tmp_path / "sae-run", "gpt2")
    result, db = score(world, tmp_path, "--dict", root)
    assert result.returncode == 0, result.stderr
    found = {Path(r["dictionary_path"]).name: r for r in runs(db)}
    assert sorted(found) == ["layers.1", "layers.2.mlp"]
    table = result.stdout.split("Scores per dictionary")[1]
    assert "sparsify (lexical) layers.1" in table and "sparsify (lexical) layers.2.mlp" in table
    for name, hook in (("layers.1", "resid.1"), ("layers.2.mlp", "mlp.2")):
        meta = store_meta(found[name], tmp_path)
        assert (found[name]["hook"], meta["hook"], meta["input_transform"]) == (hook, hook, None)
        assert found[name]["n_sampled"] >= 1  # features really were scored on that store
    # `ROOT/layers.2.mlp` scores that one alone, from the store already harvested.
    again, db2 = score(world, tmp_path, "--dict", root / "layers.2.mlp", db_name="one.sqlite")
    assert again.returncode == 0, again.stderr
    assert "harvest" not in again.stderr  # the mlp.2 store was reused
    assert [(r["hook"], r["store_path"]) for r in runs(db2)] == \
        [("mlp.2", found["layers.2.mlp"]["store_path"])]


def test_score_a_saelens_folder_harvests_its_hook_with_its_centring(world, tmp_path):
    """blocks.2.hook_resid_pre is block 2's input, our resid.1; centred writing weights in
    the SAE's config make the harvest subtract each position's mean over d_model."""
    centred = saelens_folder(tmp_path / "pre2", "blocks.2.hook_resid_pre",
                             {"center_writing_weights": True})
    plain = saelens_folder(tmp_path / "post1", "blocks.1.hook_resid_post", {})
    result, db = score(world, tmp_path, "--dict", centred, "--dict", plain)
    assert result.returncode == 0, result.stderr
    found = {Path(r["dictionary_path"]).name: r for r in runs(db)}
    means = {}
    for name in ("pre2", "post1"):
        meta = store_meta(found[name], tmp_path)
        assert (found[name]["hook"], meta["hook"]) == ("resid.1", "resid.1")
        assert meta["input_transform"] == {"pre2": "center", "post1": None}[name]
        acts = ActivationStore(tmp_path / found[name]["store_path"]).train_sample(512).float()
        means[name] = (acts.mean(-1).abs() / acts.std(-1)).max().item()
    # Measured: 0.002 centred (the fp16 store rounds) against 0.59 raw.
    assert means["pre2"] < 0.01 < means["post1"], means


def test_a_hook_option_against_the_declared_hook_is_refused_before_harvesting(world, tmp_path):
    d = saelens_folder(tmp_path / "pre2", "blocks.2.hook_resid_pre", {})
    result, _ = score(world, tmp_path, "--dict", d, "--hook", "mlp.1")
    line = error_line(result)
    assert "fit at hook resid.1, but --hook/--layer ask for mlp.1" in line
    assert "harvest" not in result.stderr and not (tmp_path / "data").exists()


def test_a_dictionary_declaring_no_hook_asks_for_one(world, tmp_path):
    shutil.copytree(PEERS / "sparsify_groupmax", tmp_path / "renamed")  # no module path: no hook
    result, _ = score(world, tmp_path, "--dict", tmp_path / "renamed")
    assert "declares no hook point; pass --hook" in error_line(result)


@pytest.mark.parametrize("case, expected", [
    ("unknown architecture", "sae-lens architecture 'abstopk' is not supported"),
    ("untranslatable hook", "hook 'blocks.1.attn.hook_q' has no equivalent among our hook points"),
    ("root without hookpoint folders", "no hookpoint folders"),
])
def test_bad_dictionaries_are_one_line(world, tmp_path, case, expected):
    if case == "unknown architecture":
        folder = shutil.copytree(PEERS / "saelens_topk", tmp_path / "abs")
        cfg = folder / "cfg.json"
        cfg.write_text(cfg.read_text().replace('"architecture": "topk"', '"architecture": "abstopk"'))
    elif case == "untranslatable hook":  # one head's queries: nothing we harvest
        folder = shutil.copytree(PEERS / "saelens_standard", tmp_path / "q")
        cfg = folder / "cfg.json"
        cfg.write_text(cfg.read_text().replace("blocks.3.hook_resid_pre", "blocks.1.attn.hook_q"))
    else:
        folder = tmp_path / "empty-run"
        (folder / "latents").mkdir(parents=True)
        (folder / "config.json").write_text('{"model": "gpt2"}')
    result = run_cli(["score", "--dict", folder, "--acts", tmp_path, *LEXICAL], cwd=tmp_path)
    assert expected in error_line(result)  # the dictionary's fault, named before the store's
    with pytest.raises(BadInputError, match=expected.replace("(", r"\(")):
        load_dictionary(folder)


def test_an_unreachable_hub_is_one_line_well_before_huggingface_hubs_timeouts(tmp_path):
    """A server that accepts and never answers; huggingface_hub alone would wait 60 s here."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    env = cli_env(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_CACHE=str(tmp_path / "hf"),
                  HF_HUB_ETAG_TIMEOUT="60", HF_HUB_DOWNLOAD_TIMEOUT="60")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(name)
    start = time.monotonic()
    try:
        result = run_cli(["inspect", "hf:EleutherAI/sae-pythia-70m-32k/layers.3"], env=env)
    finally:
        server.close()
    elapsed = time.monotonic() - start
    line = error_line(result)
    assert f"Hub at http://127.0.0.1:{port} is unreachable" in line and "timed out" in line
    assert elapsed < 45, elapsed  # process start-up included; the probe itself is timed in
    # tests/test_formats_hub.py (about a second)


@pytest.mark.parametrize("kind, rows", [
    ("ours", {"hook": "resid.1", "architecture": "topk", "source": "autointerp folder"}),
    ("saelens_gated", {"hook": "resid.7 (as written: blocks.8.hook_resid_pre)",
                       "architecture": "gated", "source": "sae-lens folder"}),
    ("saelens_standard_layer_norm", {"input normalisation": "layer_norm"}),
    ("saelens_transcoder", {"encode only": "yes", "b_dec subtracted from input": "no"}),
    ("sparsify_root/layers.2.mlp", {"hook": "mlp.2 (as written: layers.2.mlp)",
                                    "architecture": "topk", "source": "sparsify folder"}),
    ("sparsify_transcoder/layers.1", {"hook": "resid.0 (as written: layers.1)",
                                      "architecture": "transcoder", "encode only": "yes"}),
    ("sparsify_groupmax", {"hook": "none declared (score asks for --hook)",
                           "architecture": "topk+groupmax"}),
    ("gemmascope", {"hook": "resid.3 (as written: gemma-scope-2b-pt-res/layer_3)",
                    "architecture": "jumprelu", "source": "gemma-scope npz"}),
])
def test_inspect_names_hook_architecture_and_source_for_every_kind(kind, rows, tmp_path, capsys,
                                                                  monkeypatch):
    from autointerp.cli.display import print_dictionary

    if kind == "ours":
        W = random_weights(3)
        path = Dictionary(W, torch.zeros(N_FEATURES), W.clone(), torch.zeros(D_MODEL), "topk", 4,
                          meta={"method": "topk", "hook": "resid.1"}).save(tmp_path / "ours")
    elif kind == "gemmascope":
        from tests.support.data import GEMMA_PATH, gemma_npz

        path = tmp_path / "gemma-scope-2b-pt-res" / GEMMA_PATH
        gemma_npz(path / "params.npz")
    else:
        path = PEERS / kind
    monkeypatch.setenv("COLUMNS", "300")  # one line per row: rich wraps to the terminal
    print_dictionary(load_dictionary(path), path)
    table = {}
    for line in capsys.readouterr().out.splitlines():  # rich rows: "│ name │ value │"
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 2 and cells[0]:
            table[cells[0]] = cells[1]
    for name, value in rows.items():
        assert table.get(name, "").startswith(value), (name, table)


@pytest.mark.parametrize("model, hook_name, expected", [
    ("google/gemma-2-2b", "blocks.3.hook_mlp_out", "mlp_post.3"),
    ("gemma-2-9b-it", "blocks.3.hook_attn_out", "attn_post.3"),
    ("allenai/OLMo-2-1124-7B", "blocks.3.hook_mlp_out", "mlp_post.3"),
    ("google/gemma-2-2b", "blocks.3.hook_resid_post", "resid.3"),
    ("gemma-2b", "blocks.3.hook_mlp_out", "mlp.3"),  # Gemma 1 has no post-MLP norm
    ("gpt2-small", "blocks.3.hook_attn_out", "attn.3"),
])
def test_transformerlens_sublayer_outputs_after_a_post_norm(tmp_path, model, hook_name, expected):
    """TransformerLens reads Gemma 2's hook_mlp_out after post_feedforward_layernorm: that is
    our mlp_post.3, not mlp.3 (the MLP module's own output)."""
    folder = saelens_folder(tmp_path / "sae", hook_name, {})
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"]["model_name"] = model
    (folder / "cfg.json").write_text(json.dumps(cfg))
    assert load_dictionary(folder).meta["hook"] == expected


def test_a_hub_root_of_nested_dictionaries_is_refused_before_any_download(tmp_path, monkeypatch):
    """`hf:google/gemma-scope-2b-pt-res` alone would download thousands of SAEs; the file list
    in the Hub's answer to the reachability probe shows it, and nothing is fetched."""
    from tests.support.servers.hub import fake_hub

    files = {f"layer_{layer}/width_16k/average_l0_71/params.npz": b"x" for layer in (3, 4)}
    server, served = fake_hub("google/gemma-scope-tiny-res", files)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    try:
        with pytest.raises(BadInputError, match="holds 2 dictionaries in nested folders .* name "
                           "one, hf:google/gemma-scope-tiny-res/layer_3/width_16k/average_l0_71"):
            load_dictionary("hf:google/gemma-scope-tiny-res")
    finally:
        server.stop()
    assert served == [] and not (tmp_path / "hf").exists()


def test_a_foreign_dictionary_without_a_store_says_how_to_get_one():
    from autointerp.cli.score import check_stores

    with pytest.raises(BadInputError, match="does not name its activation store; pass --acts "
                                            "STORE, or --model M --corpus C to harvest"):
        check_stores({PEERS / "saelens_gated": None}, force=False)


@pytest.mark.slow
def test_smollm2_harvest_for_a_saelens_hook_reads_hugging_faces_hidden_state(tmp_path):
    """The realistic check: a sae-lens config at blocks.7.hook_resid_pre of SmolLM2-135M (which
    asks for centred writing weights: a no-op on RMSNorm) makes `score --model` harvest
    resid.6, uncentred, equal to Hugging Face's hidden_states[7] and not its neighbours."""
    from autointerp.harvest.models import load_causal_lm
    from autointerp.scoring.stores import HarvestSpec, harvest_for

    folder = tmp_path / "sae"
    folder.mkdir()
    W = torch.randn(576, 64, generator=torch.Generator().manual_seed(0)) / 24
    save_file({"W_enc": W, "b_enc": torch.zeros(64), "W_dec": W.T.contiguous(),
               "b_dec": torch.zeros(576)}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({
        "architecture": "standard", "d_in": 576, "d_sae": 64, "normalize_activations": "none",
        "metadata": {"model_name": "HuggingFaceTB/SmolLM2-135M-Instruct",
                     "hook_name": "blocks.7.hook_resid_pre", "sae_lens_version": "6.54.12",
                     "model_from_pretrained_kwargs": {"center_writing_weights": True}}}))
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": p})
                                for p in corpus_text(0, n_paragraphs=60).split("\n\n")))
    store = ActivationStore(harvest_for([folder], HarvestSpec(
        "smollm2-135m", None, None, str(corpus), 5000, device="cpu"))[folder])
    assert (store.meta["hook"], store.meta["model"]) == ("resid.6", "smollm2-135m")
    assert store.meta["center_is_noop"] is True
    chunk = next(iter(store.eval_chunks(max_fragments=2)))
    lm = load_causal_lm("smollm2-135m", device="cpu", dtype="float32")
    prefix = lm.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    with torch.no_grad():
        hidden = lm.model(torch.tensor([[prefix, *chunk.tokens[0].tolist()]]),
                          output_hidden_states=True).hidden_states
    got = chunk.acts[0]
    error = {i: ((got - hidden[i][0, 1:]).norm() / hidden[i][0, 1:].norm()).item() for i in (6, 7, 8)}
    # Measured (bf16 harvest, fp16 store): 0.010 for [7], 0.20 for [6] and [8].
    assert error[7] < 0.03 and min(error[6], error[8]) > 0.1, error


def test_every_commands_help_renders():
    """Rich reads square brackets in help text as markup: `hf:ORG/REPO[/PATH]` in --dict's
    help made `score --help` crash with a MarkupError."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from autointerp.cli import app

    commands = sorted(get_command(app).commands)
    assert {"score", "inspect", "harvest"} <= set(commands)
    for name in commands:
        result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0 and "--" in result.output, (name, result.exception)
    assert "hf:ORG/REPO/PATH" in CliRunner().invoke(app, ["score", "--help"]).output
