"""Where a dictionary comes from: a folder in one of four layouts, or a name on the Hub.

    our folder         config.json + dictionary.safetensors
    sae-lens folder    cfg.json + sae_weights.safetensors
    sparsify folder    cfg.json + sae.safetensors (a checkpoint root holds one per hookpoint)
    Gemma Scope        params.npz
    dictionary_learning  config.json (with `trainer`) + ae.pt (SAEBench's suites)
    hf:ORG/REPO[/PATH] any of the above, fetched through huggingface_hub into its cache
    saelens:REL/ID     an SAE of sae-lens's pretrained table (needs the `saelens` extra)

Every reader maps the file onto our one Dictionary form and records, in meta, our hook name
(`hook`), the library's own (`hook_source_name`), where it came from (`source`) and its
`architecture`. Anything a reader cannot reproduce exactly is refused in one line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from autointerp.dictionaries.header import (  # noqa: F401 (read_* re-exported)
    CLT_CONFIG,
    CONFIG_NAME,
    FORMAT_VERSION,
    LAYOUTS,
    WEIGHTS_NAME,
    Header,
    clt_layer_files,
    is_clt_layer_file,
    read_json,
    read_weights,
)
from autointerp.errors import BadInputError

if TYPE_CHECKING:

    from autointerp.dictionaries.dictionary import Dictionary


def resolve(spec: str | Path) -> Path:
    """The local folder (or file) a dictionary spec names, downloading `hf:` / `saelens:`
    names into their caches first."""
    text = str(spec)
    if text.startswith("hf:"):
        from autointerp.dictionaries.hub import fetch_hf

        return fetch_hf(text[3:])
    if text.startswith("saelens:"):
        from autointerp.dictionaries.hub import fetch_saelens

        return fetch_saelens(text[8:])
    return Path(spec)


def find_layout(path: str | Path) -> tuple[Path | None, Path, str]:
    """(config file, weights file, reader) of the dictionary folder at `path`."""
    path = resolve(path)
    if is_clt_layer_file(path):  # cross-layer transcoders: one file per layer
        return path.parent / CLT_CONFIG, path, "clt"
    if path.is_file():
        path = path.parent
    if clt_layer_files(path):
        raise BadInputError(f"{path} is a cross-layer transcoder with one encoder per layer: "
                            f"name one, {path / clt_layer_files(path)[0].name}, or score the root")
    if not path.is_dir():
        raise BadInputError(f"dictionary {path} does not exist")
    if not _holds_dictionary(path) and hookpoint_folders(path):
        names = ", ".join(p.name for p in hookpoint_folders(path)[:4])
        raise BadInputError(f"{path} is a checkpoint root with one dictionary per hookpoint "
                            f"({names}, ...): name one of its folders, or use "
                            "load_dictionaries / score the root to get them all")
    for config, weights, kind in LAYOUTS:
        # Our config.json alone is enough to pick our reader, which then names the
        # missing weights file; a bare cfg.json is ambiguous until its weights are seen.
        if config is None:
            if (path / weights).exists():
                return None, path / weights, kind
        elif (path / weights).exists() or (kind == "autointerp" and _is_ours(path / config)):
            if (path / config).exists():
                return path / config, path / weights, kind
    if any(p.is_dir() for p in path.iterdir()):
        raise BadInputError(f"no dictionary in {path}, and no hookpoint folders (sub-folders "
                            "with cfg.json + sae.safetensors, as a sparsify checkpoint root has)")
    raise BadInputError(f"no dictionary in {path}: expected config.json + {WEIGHTS_NAME}, "
                        "cfg.json + sae_weights.safetensors (sae-lens) or sae.safetensors "
                        "(sparsify), params.npz (Gemma Scope), or config.json + ae.pt "
                        "(dictionary_learning)")


def _is_ours(config: Path) -> bool:
    """Whether config.json is our dictionary's (sparsify writes its run's config.json too)."""
    try:
        return json.loads(config.read_text()).get("format") == "autointerp-dictionary"
    except (OSError, ValueError, AttributeError):
        return config.exists()  # unreadable: let our reader name the problem


def hookpoint_folders(root: Path) -> list[Path]:
    """The sub-folders of a sparsify checkpoint root that hold one dictionary each."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _holds_dictionary(p)),
                  key=lambda p: _natural_key(p.name))


def _holds_dictionary(folder: Path) -> bool:
    return folder.is_dir() and any((folder / weights).exists() for _, weights, _ in LAYOUTS)


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in name.replace(".", " . ").split()]


def dictionary_specs(spec: str | Path) -> list[str]:
    """One spec per dictionary that `spec` names: itself, or for a checkpoint root holding
    one folder per hookpoint (sparsify's layout), each of those folders."""
    path = resolve(spec)
    folders = [] if _holds_dictionary(path) else hookpoint_folders(path) or clt_layer_files(path)
    return [f"{str(spec).rstrip('/')}/{p.name}" for p in folders] or [str(spec)]


def expand_specs(specs) -> list[str]:
    """Every dictionary that a list of specs names, checkpoint roots expanded (for `score`)."""
    return [one for spec in specs for one in dictionary_specs(spec)]


def load_dictionaries(spec: str | Path) -> dict[str, Dictionary]:
    """Every dictionary `spec` names, by folder: a checkpoint root gives one per hookpoint."""
    return {s: load_dictionary(s) for s in dictionary_specs(spec)}


def dictionary_id(spec: str | Path) -> str:
    """sha256 of the dictionary's weights file: the id used in the results database."""
    _, weights, _ = find_layout(spec)
    h = hashlib.sha256()
    try:
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise BadInputError(f"cannot read dictionary weights {weights}: {e.strerror}") from None
    return h.hexdigest()


def read_header(spec: str | Path) -> Header | Dictionary:
    """What scoring needs before the weights: our own format's header from its config
    alone (no torch); for any other layout, the dictionary itself."""
    config, weights, kind = find_layout(spec)
    if kind == "autointerp" and weights.exists():
        cfg = read_json(config)
        shape = (cfg.get("d_model"), cfg.get("n_features"))
        if cfg.get("format_version", 0) <= FORMAT_VERSION and all(isinstance(n, int) for n in shape):
            return Header(*shape, _with_source(spec, dict(cfg.get("meta") or {})))
    return load_dictionary(spec)


def load_dictionary(spec: str | Path) -> Dictionary:
    """Read one dictionary in any layout of LAYOUTS, or by `hf:` / `saelens:` name."""
    d = _read(*find_layout(spec))
    _with_source(spec, d.meta)
    return d


def _with_source(spec: str | Path, meta: dict) -> dict:
    """A Hub name is recorded as the dictionary's source: the name a user can fetch again,
    not our cache path."""
    if str(spec).startswith(("hf:", "saelens:")):
        meta["source"] = str(spec)
    return meta


def _read(config_path: Path | None, weights_path: Path, kind: str) -> Dictionary:
    if kind == "saelens":
        from autointerp.dictionaries.saelens import from_saelens

        return from_saelens(read_json(config_path), weights_path)
    if kind == "sparsify":
        from autointerp.dictionaries.sparsify import from_sparsify

        return from_sparsify(read_json(config_path), weights_path)
    if kind == "gemmascope":
        from autointerp.dictionaries.gemmascope import from_gemmascope

        return from_gemmascope(weights_path)
    if kind == "clt":
        from autointerp.dictionaries.clt import from_clt

        return from_clt(weights_path)
    if kind == "dictionary_learning":
        from autointerp.dictionaries.dictlearning import from_dictionary_learning

        return from_dictionary_learning(read_json(config_path), weights_path)
    return _load_ours(read_json(config_path), config_path, weights_path)


def _load_ours(cfg: dict, config_path: Path, weights_path: Path) -> Dictionary:
    from autointerp.dictionaries.dictionary import Dictionary

    t = read_weights(weights_path, ("W_enc", "b_enc", "W_dec", "b_dec"))
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise BadInputError(f"{config_path} has format version {cfg['format_version']}; "
                            "upgrade autointerp to read it")
    d = Dictionary(t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"], cfg.get("activation", "relu"),
                   cfg.get("k"), t.get("threshold"), cfg.get("meta", {}),
                   b_mag=t.get("b_mag"), r_mag=t.get("r_mag"),
                   apply_b_dec_to_input=cfg.get("apply_b_dec_to_input", True),
                   input_norm=cfg.get("input_norm", "none"))
    if (d.n_features, d.d_model) != (cfg.get("n_features"), cfg.get("d_model")):
        raise BadInputError(f"{weights_path} holds {d.n_features} x {d.d_model} weights but "
                            f"{config_path} says {cfg.get('n_features')} x {cfg.get('d_model')}")
    return d
