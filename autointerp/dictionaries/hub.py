"""Dictionaries named on the Hugging Face Hub: `hf:ORG/REPO[/PATH]` and `saelens:RELEASE/ID`.

Files go through huggingface_hub into its own cache, so a second run, HF_HUB_OFFLINE=1 or a
dropped connection reuse what is there. Before huggingface_hub is let loose, one request with
a short timeout and no retries checks that the Hub answers for the repository; when it does
not, the cached copy is used, or one line says the Hub is unreachable, in about HUB_TIMEOUT_S
rather than after huggingface_hub's retries. HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_CACHE / HF_HOME are read at call time and
passed to huggingface_hub (which otherwise fixes them when it is imported).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from autointerp.errors import BadInputError

HUB_TIMEOUT_S = 1.0
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _hub_settings() -> dict:
    cache = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None)
    return {"endpoint": (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/"),
            "cache_dir": cache,
            "offline": _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")}


def split_hf_name(name: str) -> tuple[str, str]:
    """('ORG/REPO', 'PATH') for 'ORG/REPO/PATH'; PATH may be ''."""
    parts = name.strip("/").split("/")
    repo_id, path = "/".join(parts[:2]), "/".join(parts[2:])
    if not _REPO_ID.match(repo_id):
        raise BadInputError(f"hf:{name} is not a Hub name: write hf:ORG/REPO or hf:ORG/REPO/PATH")
    return repo_id, path


def fetch_hf(name: str) -> Path:
    """The local folder of `ORG/REPO[/PATH]`, downloaded (only PATH's files) if needed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id, path = split_hf_name(name)
    hub = _hub_settings()
    patterns = [f"{path}/*", path] if path else None
    reason = "HF_HUB_OFFLINE is set" if hub["offline"] else _unreachable(repo_id, hub, path)
    try:
        # "main" (the default revision), so that the cache records refs/main for offline use.
        root = snapshot_download(repo_id, allow_patterns=patterns, cache_dir=hub["cache_dir"],
                                 endpoint=hub["endpoint"], local_files_only=reason is not None)
    except LocalEntryNotFoundError as e:
        why = reason or (str(e).splitlines()[0] if str(e) else "the download failed")
        raise BadInputError(f"hf:{name}: {why}, and {repo_id} is not in the Hugging Face "
                            f"cache ({hub['cache_dir'] or 'default'})") from None
    except Exception as e:  # huggingface_hub raises many HTTP error types
        raise BadInputError(f"hf:{name}: download failed: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    local = Path(root) / path
    if not local.exists():
        raise BadInputError(f"hf:{name}: {repo_id} has no file or folder {path!r}")
    return local


def _unreachable(repo_id: str, hub: dict, path: str | None = None) -> str | None:
    """Why the Hub cannot be asked about `repo_id`, or None when it answers. One request with
    a short timeout and no retries: huggingface_hub's own client retries for longer. For a
    repository root (`path` ''), the file list in the answer is checked first (see below)."""
    import httpx
    from huggingface_hub import get_token

    token = get_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{hub['endpoint']}/api/models/{repo_id}/revision/main"
    try:
        r = httpx.get(url, headers=headers, timeout=HUB_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as e:  # refused, DNS, timeout: the Hub is unreachable
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"the Hugging Face Hub at {hub['endpoint']} is unreachable ({why[:120]})"
    if r.status_code in (401, 403, 404):
        raise BadInputError(f"hf:{repo_id}: no such repository on {hub['endpoint']}, or it is "
                            f"private or gated (HTTP {r.status_code}; log in with `hf auth login`)")
    if r.status_code >= 500 or "sha" not in _json(r):
        return f"the Hugging Face Hub at {hub['endpoint']} answered HTTP {r.status_code}"
    if path == "":
        _check_root(repo_id, _json(r).get("siblings") or [])
    return None


def _check_root(repo_id: str, siblings: list) -> None:
    """A root is fetched whole only when it is one dictionary or a checkpoint root (weights
    at most one folder down): Gemma Scope's roots hold thousands of SAEs, terabytes in all."""
    from autointerp.dictionaries.header import LAYOUTS

    names = {weights for _, weights, _ in LAYOUTS}
    weights = [s.get("rfilename", "") for s in siblings if isinstance(s, dict)]
    nested = [f for f in weights if f.rsplit("/", 1)[-1] in names and f.count("/") > 1]
    if nested:
        raise BadInputError(f"hf:{repo_id} holds {len(nested)} dictionaries in nested folders "
                            f"(e.g. {nested[0].rsplit('/', 1)[0]}): name one, "
                            f"hf:{repo_id}/{nested[0].rsplit('/', 1)[0]}")


def _json(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def fetch_saelens(name: str) -> Path:
    """`RELEASE/SAE_ID` through sae-lens's table of pretrained SAEs, saved once in our format
    (with the table's config overrides and any norm scaling factor folded in by sae-lens).
    Once converted it loads from our cache, with or without sae-lens and the Hub."""
    release, _, sae_id = name.partition("/")
    if not release or not sae_id:
        raise BadInputError(f"saelens:{name}: write saelens:RELEASE/SAE_ID")
    from autointerp.harvest.models import cache_dir

    out = cache_dir() / "saelens" / release / re.sub(r"[^\w.-]", "_", sae_id)
    if (out / "config.json").exists():
        return out
    try:
        from sae_lens import SAE
        from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name
    except ImportError:
        raise BadInputError(f"saelens:{name} needs sae-lens: pip install 'autointerp[saelens]'"
                            " (or use hf:ORG/REPO/PATH with the release's repository)") from None
    try:
        repo_id, _ = get_repo_id_and_folder_name(release, sae_id)
        hub = _hub_settings()
        why = None if hub["offline"] else _unreachable(repo_id, hub)
        if why:
            raise BadInputError(f"saelens:{name}: {why}; with HF_HUB_OFFLINE=1 sae-lens reads "
                                "what the Hugging Face cache holds")
        sae, cfg, _ = SAE.from_pretrained_with_cfg_and_sparsity(release, sae_id, device="cpu")
    except BadInputError:
        raise
    except Exception as e:  # sae-lens's ValueError for unknown ids, huggingface_hub's errors
        raise BadInputError(f"saelens:{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    _saelens_to_ours(sae, cfg, f"saelens:{name}", out)
    return out


SAELENS_METADATA = ("model_name", "hook_name", "hook_head_index", "model_class_name",
                    "model_from_pretrained_kwargs", "sae_lens_training_version",
                    "hf_hook_name", "reshape_activations",
                    "neuronpedia_id")  # the report links each feature to its page


def _saelens_to_ours(sae, cfg: dict, source: str, out: Path) -> None:
    import shutil

    from autointerp.dictionaries.saelens import tensors_to_dictionary

    full = sae.cfg.to_dict()
    # The release's config overrides (e.g. center_writing_weights for gpt2-small-res-jb)
    # sit at the top level of `cfg`; put them where our reader looks, winning over the file.
    md = dict(full.get("metadata") or {})
    md.update({k: cfg[k] for k in SAELENS_METADATA if cfg.get(k) is not None})
    full["metadata"] = md
    tmp = out / ".saelens"
    d = tensors_to_dictionary(full, sae.state_dict(), source, tmp)
    d.save(out)
    shutil.rmtree(tmp, ignore_errors=True)
