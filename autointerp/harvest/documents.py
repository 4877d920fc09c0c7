"""Documents and corpora: what a corpus yields and how plain text is cut into documents.
The leaf under corpus.py (the dispatcher) and corpus_builtin.py (the packaged corpus)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

DOC_CHARS = 4000
"""Paragraphs are grouped into documents of at most this many characters (one long
paragraph stays whole): about 900 SmolLM2 tokens, i.e. 14 fragments of 64 tokens."""


@dataclass(frozen=True)
class Document:
    id: str
    """Stable across runs: the train/eval split hashes it."""
    text: str
    genre: str
    """Source family, e.g. fiction, drama, scripture, technical, local."""


@dataclass(frozen=True)
class Corpus:
    """A re-iterable stream of documents."""

    spec: str
    """As the user gave it (`builtin`, a path, `hf:NAME`)."""
    fingerprint: str
    """sha256 of the corpus content where it is known up front (builtin, local files),
    else the dataset name and revision: recorded in the store's metadata."""
    _documents: Callable[[], Iterator[Document]] = field(repr=False, compare=False)

    def __iter__(self) -> Iterator[Document]:
        return self._documents()


def chunk_paragraphs(paragraphs: Iterable[str], max_chars: int = DOC_CHARS) -> Iterator[str]:
    """Group consecutive non-empty paragraphs into texts of at most max_chars."""
    group: list[str] = []
    size = 0
    for para in paragraphs:
        if not para.strip():
            continue
        if group and size + len(para) + 2 > max_chars:
            yield "\n\n".join(group)
            group, size = [], 0
        group.append(para)
        size += len(para) + 2
    if group:
        yield "\n\n".join(group)


def split_paragraphs(text: str) -> list[str]:
    """Blocks separated by blank lines, with trailing whitespace trimmed."""
    blocks, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line.rstrip())
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return blocks
