"""A tiny random GPT-2 with a word-level tokenizer that knows the IOI templates, so every
name is one token (the generator's single-token rule holds), for the causal tests."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from autointerp.causal import tasks


def ioi_vocabulary() -> list[str]:
    text = " ".join(tasks.ABBA_TEMPLATES + tasks.PLACES + tasks.OBJECTS + tasks.CANDIDATE_NAMES)
    return sorted(set(re.findall(r"\w+|[^\w\s]", text)))


def word_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>"] + ioi_vocabulary())}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", unk_token="<unk>")


def build_tiny_gpt2(path: Path, seed: int = 0, passthrough: bool = False, n_layer: int = 2,
                    scale: float = 1.0) -> Path:
    """passthrough: attention and MLP outputs zeroed, so every block hands the residual
    stream on unchanged (the planted-circuit model). scale multiplies the initial weights'
    spread (a larger one makes the model less linear)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = word_tokenizer()
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=n_layer, n_head=4,
                                       n_positions=64, initializer_range=0.02 * scale,
                                       pad_token_id=tok.pad_token_id))
    if passthrough:
        with torch.no_grad():
            for block in model.transformer.h:
                for proj in (block.attn.c_proj, block.mlp.c_proj):
                    proj.weight.zero_()
                    proj.bias.zero_()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
