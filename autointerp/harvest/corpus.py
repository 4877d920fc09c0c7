"""Text corpora for harvesting: `builtin` (packaged English, see corpus_builtin.py), a local
.txt / .jsonl file or a folder of them, or a Hugging Face dataset (`hf:NAME`).

A corpus yields Documents lazily; harvest.py tokenizes each and cuts it into fragments.
Documents are the unit of the train/eval split, so they should be independent texts
(a chapter, a section, a record), a few thousand characters or longer.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from autointerp.errors import BadInputError
from autointerp.harvest.corpus_builtin import open_builtin
from autointerp.harvest.documents import (  # noqa: F401 (re-exported)
    DOC_CHARS,
    Corpus,
    Document,
    chunk_paragraphs,
    split_paragraphs,
)

LOCAL_SUFFIXES = (".txt", ".jsonl")


def open_corpus(spec: str, text_field: str = "text") -> Corpus:
    """Resolve and validate a corpus spec; raise BadInputError (one line) if it is unusable."""
    if spec == "builtin":
        return open_builtin()
    path = Path(spec).expanduser()
    if path.exists():
        corpus = _open_local(spec, path, text_field)
    elif spec.startswith("hf:") or not _looks_like_path(spec):
        return _open_hf(spec.removeprefix("hf:"), spec, text_field)
    else:
        raise BadInputError(f"corpus '{spec}': no such file or folder")
    if next(iter(corpus), None) is None:
        raise BadInputError(f"corpus '{spec}' is empty: it has no text")
    return corpus


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith(LOCAL_SUFFIXES + (".json",))


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES)
        if not files:
            raise BadInputError(f"corpus folder {path} has no .txt or .jsonl files")
        return files
    if path.suffix not in LOCAL_SUFFIXES:
        raise BadInputError(f"corpus file {path} must be .txt or .jsonl (a text field per line)")
    return [path]


def _checked_sha256(path: Path) -> str:
    """sha256 of a file that must be UTF-8 (checked in one streaming pass)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        offset = 0
        while block := f.read(1 << 20):
            digest.update(block)
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                raise BadInputError(f"corpus file {path} is not UTF-8 text "
                                    f"(invalid byte at offset {offset + e.start})") from None
            offset += len(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise BadInputError(f"corpus file {path} is not UTF-8 text (truncated at the end)") from None
    return digest.hexdigest()


def _open_local(spec: str, path: Path, text_field: str) -> Corpus:
    files = _local_files(path)
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relative_to(path) if path.is_dir() else f.name}:{_checked_sha256(f)};".encode())
    root = path if path.is_dir() else path.parent

    def documents() -> Iterator[Document]:
        for f in files:
            name = str(f.relative_to(root))
            if f.suffix == ".jsonl":
                yield from _jsonl_documents(f, name, text_field)
            else:
                text = f.read_text(encoding="utf-8-sig")
                for i, chunk in enumerate(chunk_paragraphs(split_paragraphs(text))):
                    yield Document(f"{name}:{i}", chunk, "local")

    return Corpus(spec, digest.hexdigest(), documents)


def _jsonl_documents(path: Path, name: str, text_field: str) -> Iterator[Document]:
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadInputError(f"corpus file {path}, line {lineno}: not JSON ({e.msg})") from None
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise BadInputError(f"corpus file {path}, line {lineno}: no string field "
                                    f"'{text_field}' (choose one with --text-field)")
            if text.strip():
                yield Document(f"{name}:{lineno}", text, "local")


def _open_hf(name: str, spec: str, text_field: str) -> Corpus:
    """A Hugging Face dataset, streamed (never downloaded whole). `NAME` or `NAME:CONFIG`."""
    try:
        import datasets
    except ImportError:
        raise BadInputError(f"corpus '{spec}' is not a local file or folder; reading Hugging Face "
                            "datasets needs the extra: pip install 'autointerp[hf]'") from None
    from autointerp.harvest.models import check_on_hub

    name, _, config = name.partition(":")
    revision = check_on_hub(name, "corpus", repo_type="dataset")
    try:
        stream = datasets.load_dataset(name, config or None, split="train", streaming=True)
        first = next(iter(stream))
    except Exception as e:  # datasets raises many types; all mean "cannot read it"
        raise BadInputError(f"cannot read corpus '{spec}': {str(e).strip().splitlines()[0]}") from None
    if text_field not in first:
        raise BadInputError(f"corpus '{spec}' has no field '{text_field}' (fields: "
                            f"{', '.join(first)}); choose one with --text-field")

    def documents() -> Iterator[Document]:
        for i, row in enumerate(stream):
            if isinstance(row[text_field], str) and row[text_field].strip():
                yield Document(f"{name}:{i}", row[text_field], "hf")

    return Corpus(spec, f"hf:{name}:{config}@{revision}", documents)
