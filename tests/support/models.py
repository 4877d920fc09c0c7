"""Tiny randomly initialised models, built offline by one builder from presets: GPT-NeoX,
GPT-2 and Llama with byte-level BPE tokenizers (model and harvest tests), a GPT-2 with a
word-level IOI tokenizer (causal tests) and a Llama with a chat template (LLM tests)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

FAMILIES = ("gpt_neox", "gpt2", "llama")
WORDS = ("the cat sat on mat and a dog ran to park while it rained in London . , ; ! ? "
         "she said that he would come back tomorrow with 12 apples 3 pears 2024 café naïve "
         "résumé — “quoted” 日本 東京 🙂").split()
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_TEXT = [
    "The cat sat on the mat. Activations range from 0 to 10.",
    "Sparse autoencoders find highly interpretable features in language models.",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10. Explain what this neuron detects.",
] * 20


def corpus_text(seed: int = 0, n_paragraphs: int = 24) -> str:
    """Deterministic English-like paragraphs with some multi-byte characters (a byte-level
    tokenizer splits them, so fragment cuts can produce U+FFFD)."""
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(n_paragraphs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(150, 300))]
        paragraphs.append(" ".join(words).capitalize())
    return "\n\n".join(paragraphs) + "\n"


def _bpe(texts: list[str], vocab_size: int, specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return raw


def train_tokenizer(texts: list[str], family: str):
    """A byte-level BPE tokenizer trained offline, with each family's special tokens: GPT-2's
    has no BOS (documents start with <|endoftext|>), GPT-NeoX's BOS is <|endoftext|>, and the
    Llama one has <s> / </s> and no <|endoftext|> at all."""
    from transformers import PreTrainedTokenizerFast

    specials = {"gpt2": (None, "<|endoftext|>"), "gpt_neox": ("<|endoftext|>", "<|endoftext|>"),
                "llama": ("<s>", "</s>")}[family]
    raw = _bpe(texts, 320, [t for t in dict.fromkeys(specials) if t] + ["<pad>"])
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=specials[0],
                                   eos_token=specials[1], pad_token="<pad>")


def chat_tokenizer():
    """Byte-level BPE (digits are single tokens) with a ChatML template."""
    from transformers import PreTrainedTokenizerFast

    raw = _bpe(CHAT_TEXT, 400, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", bos_token="<|endoftext|>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def ioi_vocabulary() -> list[str]:
    from autointerp.causal import tasks

    text = " ".join(tasks.ABBA_TEMPLATES + tasks.PLACES + tasks.OBJECTS + tasks.CANDIDATE_NAMES)
    return sorted(set(re.findall(r"\w+|[^\w\s]", text)))


def word_tokenizer():
    """Word-level, knowing the IOI templates, so every name is one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>"] + ioi_vocabulary())}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", unk_token="<unk>")


@dataclass(frozen=True)
class Preset:
    family: str
    """A transformers config family: gpt2, gpt_neox, llama."""
    tokenizer: str
    """bpe (the family's specials), chat or ioi."""
    config: dict = field(default_factory=dict)
    ids: bool = True
    """Pass the tokenizer's bos/eos/pad ids to the config."""


PRESETS = {
    "gpt2": Preset("gpt2", "bpe", dict(n_embd=32, n_layer=3, n_head=4, n_positions=128)),
    "gpt_neox": Preset("gpt_neox", "bpe", dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128, use_parallel_residual=True)),
    "llama": Preset("llama", "bpe", dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=128)),
    "ioi-gpt2": Preset("gpt2", "ioi", dict(n_embd=32, n_layer=2, n_head=4, n_positions=64),
                       ids=False),
    "chat-llama": Preset("llama", "chat", dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512)),
}


def _config(preset: Preset, tok, overrides: dict):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    cls = {"gpt2": GPT2Config, "gpt_neox": GPTNeoXConfig, "llama": LlamaConfig}[preset.family]
    if not preset.ids:
        ids = {"pad_token_id": tok.pad_token_id}
    elif preset.tokenizer == "bpe":  # as the families' own: BOS is the EOS token
        ids = {"bos_token_id": tok.eos_token_id, "eos_token_id": tok.eos_token_id,
               "pad_token_id": tok.pad_token_id}
    else:
        ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
               "pad_token_id": tok.pad_token_id}
    return cls(vocab_size=len(tok), **ids, **{**preset.config, **overrides})


def build_tiny(name: str, path: Path, seed: int = 0, *, passthrough: bool = False,
               head_scale: float = 1.0, **overrides) -> Path:
    """A randomly initialised model of preset `name` and its tokenizer, saved to path.
    `overrides` change the config (e.g. n_layer, initializer_range); passthrough zeroes
    every attention and MLP output (GPT-2), so the blocks hand the residual stream on
    unchanged; head_scale multiplies the output head (greedy choices well separated)."""
    from transformers import AutoModelForCausalLM

    preset = PRESETS[name]
    tok = {"bpe": lambda: train_tokenizer([corpus_text(1)], preset.family),
           "chat": chat_tokenizer, "ioi": word_tokenizer}[preset.tokenizer]()
    config = _config(preset, tok, overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        if passthrough:
            for block in model.transformer.h:
                for proj in (block.attn.c_proj, block.mlp.c_proj):
                    proj.weight.zero_()
                    proj.bias.zero_()
        if head_scale != 1.0:
            model.lm_head.weight.mul_(head_scale)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_tiny_gpt2(path: Path, seed: int = 0, passthrough: bool = False, n_layer: int = 2,
                    scale: float = 1.0) -> Path:
    """The IOI GPT-2 (causal tests); scale multiplies the initial weights' spread (a
    larger one makes the model less linear)."""
    return build_tiny("ioi-gpt2", path, seed, passthrough=passthrough, n_layer=n_layer,
                      initializer_range=0.02 * scale)


def build_tiny_llama(path: Path, seed: int = 0) -> Path:
    """The chat Llama; its output head scaled up, since random init gives near-uniform
    next-token distributions and batching could otherwise flip an argmax."""
    return build_tiny("chat-llama", path, seed, head_scale=20.0)


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
