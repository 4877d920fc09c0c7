"""Build an LLM client from what the user asked for (`--explainer-*`, `--simulator-*` options)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from autointerp.errors import BadInputError
from autointerp.llm.base import LLMClient

BACKENDS = ("inprocess", "openai")
OPENAI_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class ClientSpec:
    backend: str = "inprocess"
    """inprocess (transformers in this process) or openai (any OpenAI-compatible endpoint)."""
    model: str = "smollm2-135m"
    """A model name the backend knows: a load_causal_lm name or HF path, or the endpoint's model id."""
    base_url: str | None = None
    """The endpoint, e.g. http://127.0.0.1:8080/v1 (openai backend; default OpenAI's)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the key, read at call time (the key itself is never stored)."""
    concurrency: int = 8
    """Requests in flight at once (openai backend)."""
    timeout_s: float = 60.0
    """Per-attempt timeout (openai backend)."""
    device: str = "auto"
    """auto, cpu or cuda (inprocess backend)."""

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise BadInputError(f"unknown LLM backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if not self.model:
            raise BadInputError(f"the {self.backend} backend needs a model name")
        if self.base_url is not None and not re.match(r"^https?://[^/\s]+", self.base_url):
            raise BadInputError(f"--base-url must start with http:// or https://, got {self.base_url!r}")
        if self.base_url is not None and self.backend != "openai":
            raise BadInputError("--base-url needs the openai backend")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            raise BadInputError(f"--api-key-env must name an environment variable, got {self.api_key_env!r}")
        if self.concurrency < 1:
            raise BadInputError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.timeout_s <= 0:
            raise BadInputError(f"--timeout must be positive, got {self.timeout_s}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise BadInputError(f"--device must be auto, cpu or cuda, got {self.device!r}")


def make_client(spec: ClientSpec) -> LLMClient:
    """A fresh client; wrap it in `CachedClient` to record and reuse calls."""
    if spec.backend == "openai":
        from autointerp.llm.openai_client import OpenAIClient
        return OpenAIClient(spec.base_url or OPENAI_URL, spec.model, api_key_env=spec.api_key_env,
                            concurrency=spec.concurrency, timeout_s=spec.timeout_s)
    from autointerp.llm.inprocess import TransformersClient
    return TransformersClient(spec.model, device=spec.device)
