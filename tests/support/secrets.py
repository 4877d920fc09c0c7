"""A planted API key and the runs that must never show it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.cli import cli_env

SECRET = "sk-live-PLANTED-abc123XYZ"


KEY_ENV = "AUTOINTERP_TEST_KEY"


# The console script's entry, with every logger (ours, aiohttp's) at DEBUG on stderr.
LOGGED_ENTRY = [sys.executable, "-c", "import logging; logging.basicConfig(level=logging.DEBUG); "
                "from autointerp.cli import main; main()"]


def run(args: list, cwd: Path, outputs: dict[str, str], name: str) -> subprocess.CompletedProcess:
    env = cli_env(**{KEY_ENV: SECRET})
    result = subprocess.run(LOGGED_ENTRY + [str(a) for a in args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=240)
    outputs[f"{name} stdout"], outputs[f"{name} stderr"] = result.stdout, result.stderr
    return result


def score_args(dictionary: Path, db: Path, url: str, debug: bool = False) -> list:
    return [*(["--debug"] if debug else []), "score", "--dict", dictionary, "--db", db,
            "--n-sampled", "6", "--explainer", "openai", "--explainer-model", "oracle",
            "--scoring-backend", "openai", "--scoring-model", "oracle", "--scoring-mode", "json",
            "--base-url", url, "--api-key-env", KEY_ENV, "--concurrency", "4"]


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
