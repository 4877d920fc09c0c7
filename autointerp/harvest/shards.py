"""Harvest plumbing: the input prefix token, right-padded batches, a per-split shard writer
(memory holds one shard at most) and the progress bar with tokens/s."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from autointerp.errors import BadInputError
from autointerp.harvest.store import write_shard
from autointerp.progress import Progress


def prefix_token_id(tokenizer) -> int:
    """The token every input starts with: <|endoftext|> where the vocabulary has it (the
    document separator of GPT-2, GPT-NeoX and SmolLM2 pretraining), else BOS, else EOS.
    SmolLM2-Instruct declares the chat marker <|im_start|> as its BOS; after it the loss on
    builtin text was 4.00 nats/token against 3.90 after <|endoftext|> (docs/notes/harvest.md)."""
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")  # unk's id when absent
    if eot is not None and tokenizer.convert_ids_to_tokens(eot) != "<|endoftext|>":
        eot = None
    for token_id in (eot, tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise BadInputError("the tokenizer has neither a BOS nor an EOS token to start inputs with")


def make_batch(sequences: list, prefix_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask), each (batch, 1 + longest). Right padding keeps
    every real token's position (and so its activation) what it is unpadded."""
    width = 1 + max(len(s.token_ids) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, 0] = prefix_id
        ids[row, 1:1 + len(seq.token_ids)] = torch.tensor(seq.token_ids)
        mask[row, :1 + len(seq.token_ids)] = 1
    return ids, mask


class ShardWriter:
    """Buffers one split's sequences; writes a shard (with sequence offsets) whenever the
    buffer reaches shard_tokens. Shards hold whole sequences, so a resumed run can skip
    exactly the sequences of the shards already on disk."""

    def __init__(self, directory: Path, store_dtype: str, shard_tokens: int,
                 done_infos: list[dict], on_shard: Callable[[str, int], None] | None = None,
                 split: str | None = None, rank: int | None = None):
        self.directory = directory
        self.split = split or directory.name
        self.rank = rank
        """Set for one of several ranks: its shards' infos record it and their file stem."""
        self.store_dtype = store_dtype
        self.shard_tokens = shard_tokens
        self.on_shard = on_shard
        self.infos = list(done_infos)
        self.done_sequences = sum(i["n_sequences"] for i in done_infos)
        self.stored_tokens = sum(i["n_tokens"] for i in done_infos)
        self._acts: list[torch.Tensor] = []
        self._tokens: list[np.ndarray] = []
        self._first_sequence = 0
        self._buffered = 0

    def add(self, sequence, acts: torch.Tensor, tokens: np.ndarray) -> None:
        """acts: (len(tokens), d_model) in the store dtype, on the CPU."""
        if not self._acts:
            self._first_sequence = sequence.index
        self._acts.append(acts)
        self._tokens.append(tokens)
        self._buffered += len(tokens)
        if self._buffered >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self._acts:
            return
        lengths = [len(t) for t in self._tokens]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        index = len(self.infos)
        extra = {"first_sequence": self._first_sequence, "n_sequences": len(lengths)}
        if self.rank is not None:
            extra.update(rank=self.rank, stem=f"{self.directory.name}/{index:05d}")
        info = write_shard(self.directory, index, self.store_dtype, torch.cat(self._acts),
                           np.concatenate(self._tokens), offsets, extra=extra)
        self.infos.append(info)
        self.stored_tokens += info["n_tokens"]
        self.done_sequences += len(lengths)
        self._acts, self._tokens, self._buffered = [], [], 0
        if self.on_shard is not None:
            self.on_shard(self.split, index)


class _TokensPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f} tok/s" if task.speed else "- tok/s", style="cyan")


@contextmanager
def harvest_progress(total: int, completed: int, label: str,
                     enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich bar over stored tokens; yields `advance(n_tokens)`. Under torchrun only rank 0
    shows one (its own share of the tokens), so that N bars do not overwrite each other."""
    progress = Progress(TextColumn(f"harvest {label}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("tokens"), _TokensPerSecond(), TimeRemainingColumn(),
                        console=Console(stderr=True), refresh_per_second=2, disable=not enabled)
    with progress:
        done = [min(completed, total)]
        task = progress.add_task(f"harvest {label}", total=total, completed=done[0])

        def advance(n: int) -> None:
            # The last sequence can run past the target: the total grows with it, so the
            # bar never reads more than 100%.
            done[0] += n
            progress.update(task, advance=n, total=max(total, done[0]))

        yield advance
