"""Tiny randomly initialised GPT-NeoX, GPT-2 and Llama models with byte-level BPE tokenizers,
built offline for the model and harvest tests (not a test module)."""

from __future__ import annotations

import random
from pathlib import Path

import torch

FAMILIES = ("gpt_neox", "gpt2", "llama")
WORDS = ("the cat sat on mat and a dog ran to park while it rained in London . , ; ! ? "
         "she said that he would come back tomorrow with 12 apples 3 pears 2024 café naïve "
         "résumé — “quoted” 日本 東京 🙂").split()


def corpus_text(seed: int = 0, n_paragraphs: int = 24) -> str:
    """Deterministic English-like paragraphs with some multi-byte characters (a byte-level
    tokenizer splits them, so fragment cuts can produce U+FFFD)."""
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(n_paragraphs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(150, 300))]
        paragraphs.append(" ".join(words).capitalize())
    return "\n\n".join(paragraphs) + "\n"


def train_tokenizer(texts: list[str], family: str):
    """A byte-level BPE tokenizer trained offline, with each family's special tokens: GPT-2's
    has no BOS (documents start with <|endoftext|>), GPT-NeoX's BOS is <|endoftext|>, and the
    Llama one has <s> / </s> and no <|endoftext|> at all."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {"gpt2": (None, "<|endoftext|>"), "gpt_neox": ("<|endoftext|>", "<|endoftext|>"),
                "llama": ("<s>", "</s>")}[family]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=320, special_tokens=[t for t in dict.fromkeys(specials) if t] + ["<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=specials[0],
                                   eos_token=specials[1], pad_token="<pad>")


def build_tiny(family: str, path: Path, seed: int = 0) -> Path:
    """A randomly initialised 3-layer model of the family and its tokenizer, saved to path."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tok = train_tokenizer([corpus_text(1)], family)
    common = {"vocab_size": len(tok), "bos_token_id": tok.eos_token_id,
              "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    torch.manual_seed(seed)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=3, n_head=4, n_positions=128, **common))
    elif family == "gpt_neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128, use_parallel_residual=True, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=128, **common))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


_BUILT: dict[str, Path] = {}


def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Each family built once per test session (pytest's session temp dir keeps them)."""
    if not _BUILT:
        root = tmp_path_factory.mktemp("tiny-families")
        _BUILT.update({f: build_tiny(f, root / f) for f in FAMILIES})
    return _BUILT


def single_torch_thread():
    """Tiny models run fastest on one thread, and on a shared CPU extra OpenMP threads spin
    against other processes (25x slower measured here). Use as an autouse fixture."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
