"""How much of sae-lens's table of pretrained SAEs (`pretrained_saes.yaml` of the installed
sae-lens) this tool can score, per loader and hook, without downloading anything.

Each loader of sae-lens (`conversion_func`) decides a release's hook from the release and the
SAE's id or folder; this bench repeats that decision offline (the lines of
sae_lens/loading/pretrained_sae_loaders.py named below), builds the config the loader would
write, and passes it to our sae-lens reader's metadata step (`saelens_meta`: hook translation,
TransformerLens processing, hf_hook_name agreement) and input-normalisation check. An SAE is
accepted when both pass. What the table does not say (the weights, and for the default
`sae_lens` loader the architecture in cfg.json) is not checked here: the reader checks those at
load. Loaders whose hook is only in a downloaded file are reported as unknown.

    python bench/coverage.py [--table PATH] [--markdown]

Run with an interpreter that can import autointerp; sae-lens itself is not imported (its
package folder is found to read the table).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from collections import Counter
from pathlib import Path

import yaml

from autointerp.dictionaries import saelens
from autointerp.errors import BadInputError

_TL_HOOK = re.compile(r"(blocks\.\d+\.(?:attn\.|mlp\.|ln2\.)?hook_[a-z_]+?)(?=_\d|__|$)|^(hook_embed)$")
_LAYER = re.compile(r"(?:blocks\.|layers?[._]?|L|l)(\d+)")


class Unknown(Exception):
    """The hook is not in the table: only a downloaded file names it."""


def table_path() -> Path:
    spec = importlib.util.find_spec("sae_lens")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("sae-lens is not installed: pass --table PATH/pretrained_saes.yaml")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained_saes.yaml"


def _layer(text: str) -> int:
    m = _LAYER.search(text)
    if not m:
        raise Unknown(f"no layer in {text!r}")
    return int(m.group(1))


def _default(rel: dict, sae: dict) -> dict:
    """The `sae_lens` loader reads cfg.json; its hook is (by convention) in the SAE's id."""
    m = _TL_HOOK.search(sae["id"]) or _TL_HOOK.search(sae["path"])
    if not m:
        raise Unknown("hook only in cfg.json")
    return {"hook_name": m.group(1) or m.group(2), "architecture": "standard"}


def _gemma_2(rel: dict, sae: dict) -> dict:  # get_gemma_2_config_from_hf
    repo, path = rel["repo_id"], sae["path"]
    if "res" in repo:
        hook = "hook_embed" if "embedding" in path else f"blocks.{_layer(path)}.hook_resid_post"
    elif "mlp" in repo:
        hook = f"blocks.{_layer(path)}.hook_mlp_out"
    else:
        hook = f"blocks.{_layer(path)}.attn.hook_z"
    return {"hook_name": hook, "architecture": "jumprelu"}


def _gemma_3(rel: dict, sae: dict) -> dict:  # get_gemma_3_config_from_hf, _infer_gemma_3_raw_cfg_dict
    path, layer = sae["path"], _layer(sae["path"])
    if "transcoder" in path or "clt" in path:
        return {"hook_name": f"blocks.{layer}.hook_mlp_in", "architecture": "jumprelu_transcoder",
                "hf_hook_name": f"model.layers.{layer}.pre_feedforward_layernorm.output"}
    for key, hook, hf in (("resid_post", "hook_resid_post", "output"),
                          ("attn_out", "attn.hook_z", "self_attn.o_proj.input"),
                          ("mlp_out", "hook_mlp_out", "post_feedforward_layernorm.output")):
        if key in path:
            return {"hook_name": f"blocks.{layer}.{hook}", "architecture": "jumprelu",
                    "hf_hook_name": f"model.layers.{layer}.{hf}"}
    raise Unknown(f"no hook type in {path!r}")


def _llama_scope(rel: dict, sae: dict) -> dict:
    """hook_point_in is in the downloaded config; Llama Scope names it in the id: R residual
    stream, A attention output, M MLP output, TC transcoder. sae-lens folds its
    expected_average_only_in factor when it loads them (saelens: names)."""
    m = re.search(r"l(\d+)(r|a|m|tc)", sae["id"].lower())
    if not m:
        raise Unknown(f"no hook in id {sae['id']!r}")
    kind = {"r": "hook_resid_post", "a": "hook_attn_out", "m": "hook_mlp_out", "tc": "hook_mlp_in"}
    return {"hook_name": f"blocks.{m.group(1)}.{kind[m.group(2)]}", "architecture": "jumprelu"}


def _resid_post(arch: str):
    def config(rel: dict, sae: dict) -> dict:
        return {"hook_name": f"blocks.{_layer(sae['path'] + sae['id'])}.hook_resid_post",
                "architecture": arch}
    return config


def _sparsify(rel: dict, sae: dict) -> dict:  # get_sparsify_config_from_hf
    name = Path(sae["path"]).name
    hook = "hook_embed" if name == "embed_tokens" else f"blocks.{_layer(name)}.hook_resid_post"
    return {"hook_name": hook, "architecture": "standard"}


LOADERS = {
    None: _default, "sae_lens": _default, "gemma_2": _gemma_2, "gemma_3": _gemma_3,
    "connor_rob_hook_z": lambda r, s: {"hook_name": f"blocks.{_layer(s['id'])}.attn.hook_z",
                                       "reshape_activations": "hook_z", "architecture": "standard"},
    "gemma_2_transcoder": lambda r, s: {"hook_name": f"blocks.{_layer(s['path'])}.ln2.hook_normalized",
                                        "architecture": "jumprelu_transcoder"},
    "mwhanna_transcoder": lambda r, s: {"hook_name": f"blocks.{_layer(s['path'])}.mlp.hook_in",
                                        "architecture": "transcoder",
                                        "model_from_pretrained_kwargs": {"fold_ln": False}},
    "llama_scope": _llama_scope, "llama_scope_r1_distill": _llama_scope,
    "dictionary_learning_1": _resid_post("standard"), "deepseek_r1": _resid_post("standard"),
    "qwen_scope": _resid_post("topk"), "goodfire": _resid_post("standard"),
    "temporal": _resid_post("temporal"), "sparsify": _sparsify,
    "mntss_clt_layer_transcoder": lambda r, s: _unknown("feature_input_hook is in the repo's config.yaml"),
}


def _unknown(why: str):
    raise Unknown(why)


def classify(rel_name: str, rel: dict, sae: dict) -> tuple[str, str]:
    """(hook as the loader names it, 'accepted' or the reason it is refused)."""
    loader = rel.get("conversion_func")
    if loader not in LOADERS:
        return "?", f"unknown loader {loader}"
    try:
        md = LOADERS[loader](rel, sae)
    except Unknown as e:
        return "?", f"unknown offline: {e}"
    md = {"model_name": rel["model"], **md, **(rel.get("config_overrides") or {})}
    if loader == "qwen_scope":
        md["hf_hook_name"] = f"model.layers.{_layer(sae['path'] + sae['id'])}"
    arch = md.pop("architecture")
    if arch == "temporal":
        return md["hook_name"], "refused: temporal SAE (codes depend on earlier tokens' codes)"
    cfg = {"architecture": arch, "normalize_activations": md.pop("normalize_activations", "none"),
           "metadata": md}
    source = f"{rel_name}/{sae['id']}"
    try:
        saelens.saelens_meta(cfg, arch, source)
        saelens._input_norm(cfg, Path(sae["path"]))
    except BadInputError as e:
        return md["hook_name"], "refused: " + _reason(str(e), (source, sae["path"]))
    return md["hook_name"], "accepted"


def _reason(message: str, names: tuple[str, ...]) -> str:
    """The refusal without the SAE's own name, the list of our hook points and layer numbers,
    so that refusals group."""
    for name in names:
        message = message.removeprefix(f"{name}: ")
    message = re.sub(r" \(embed, token_embed[^)]*\)", "", message)
    return re.sub(r"\d+", "L", message)[:110]


def _hook_kind(hook: str) -> str:
    return re.sub(r"^blocks\.\d+\.", "blocks.L.", hook)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, help="pretrained_saes.yaml (default: installed sae-lens's)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args()
    path = args.table or table_path()
    releases = yaml.safe_load(path.read_text())
    rows: Counter = Counter()
    for rel_name, rel in releases.items():
        for sae in rel.get("saes", []):
            hook, verdict = classify(rel_name, rel, sae)
            rows[(str(rel.get("conversion_func") or "sae_lens"), _hook_kind(hook), verdict)] += 1
    total = sum(rows.values())
    accepted = sum(n for (_, _, v), n in rows.items() if v == "accepted")
    print(f"{path}: {total} SAEs in {len(releases)} releases; accepted {accepted} "
          f"({100 * accepted / total:.1f}%)")
    sep = "| " if args.markdown else ""
    print(f"{sep}loader | hook | SAEs | verdict" + (" |\n|---|---|---|---|" if args.markdown else ""))
    for (loader, hook, verdict), n in sorted(rows.items(), key=lambda r: (r[0][0], -r[1])):
        end = " |" if args.markdown else ""
        print(f"{sep}{loader} | {hook} | {n} | {verdict}{end}")


if __name__ == "__main__":
    main()
