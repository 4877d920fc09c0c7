"""The IOI generator, JSONL prompt pairs, aligned tokenisation and the task check."""

from __future__ import annotations

import pytest
import torch

from autointerp.causal import tasks
from autointerp.errors import BadInputError
from tests.support.models import word_tokenizer


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def test_ioi_pairs_are_seeded_and_abb_to_cbb(tok):
    pairs = tasks.make_ioi(tok, 30, seed=3)
    assert pairs == tasks.make_ioi(tok, 30, seed=3)
    assert pairs != tasks.make_ioi(tok, 30, seed=4)
    for p in pairs:
        a, b = p.answer.strip(), p.distractor.strip()
        assert a != b and p.clean.count(b) == 2 and p.clean.count(a) == 1
        assert not p.clean.endswith(a)  # the answer token is dropped
        # only the indirect object changed, to a third name
        diff = [(x, y) for x, y in zip(p.clean.split(), p.counterfactual.split(), strict=True) if x != y]
        assert len(diff) == 1 and diff[0][0].strip(",.") == a and diff[0][1].strip(",.") not in (a, b)
    # both orders of the templates are used
    assert any(p.clean.index(p.answer.strip()) < p.clean.index(p.distractor.strip()) for p in pairs)
    assert any(p.clean.index(p.answer.strip()) > p.clean.index(p.distractor.strip()) for p in pairs)


def test_abc_replaces_the_subjects_second_mention(tok):
    for p in tasks.make_ioi(tok, 10, seed=0, counterfactual="abc"):
        b = p.distractor.strip()
        assert p.clean.count(b) == 2 and p.counterfactual.count(b) == 1
        assert p.counterfactual.count(p.answer.strip()) == 1


def test_names_must_be_single_tokens():
    class Chars:  # a tokenizer that splits every name into characters
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": list(range(len(text)))}
    assert tasks.single_token_names(Chars()) == []
    with pytest.raises(BadInputError, match="single-token names"):
        tasks.make_ioi(Chars(), 5)


def test_jsonl_pairs_round_trip_and_bad_lines(tmp_path, tok):
    pairs = tasks.make_ioi(tok, 4)
    tasks.write_pairs(pairs, tmp_path / "p.jsonl")
    assert tasks.read_pairs(tmp_path / "p.jsonl") == pairs
    (tmp_path / "bad.jsonl").write_text('{"clean": "x"}\n')
    with pytest.raises(BadInputError, match="line 1"):
        tasks.read_pairs(tmp_path / "bad.jsonl")
    (tmp_path / "plain.jsonl").write_text('{"clean": "Mary went", "counterfactual": "John went"}\n')
    batch = tasks.tokenize_pairs(tok, tasks.read_pairs(tmp_path / "plain.jsonl"))
    assert batch.answer is None and batch.n_prompts == 1


def test_misaligned_pairs_are_refused(tok):
    pair = tasks.PromptPair("Then , Mary went", "Then Mary went")
    with pytest.raises(BadInputError, match="align"):
        tasks.tokenize_pairs(tok, [pair])
    with pytest.raises(BadInputError, match="one"):
        tasks.tokenize_pairs(tok, [tasks.PromptPair("Mary went", "John went", "Mary went", "John")])


def test_batch_is_right_padded_with_last_positions(tok):
    pairs = tasks.make_ioi(tok, 30, seed=0)
    batch = tasks.tokenize_pairs(tok, pairs)
    lengths = [len(tok(p.clean)["input_ids"]) for p in pairs]
    assert batch.last.tolist() == [n - 1 for n in lengths]
    assert batch.mask.sum(1).tolist() == lengths
    assert (batch.clean_ids != batch.cf_ids).sum(1).tolist() == [1] * 30


def test_task_check_counts_and_warns(tok):
    batch = tasks.tokenize_pairs(tok, tasks.make_ioi(tok, 4))
    logits = torch.zeros(4, len(tok))
    rows = torch.arange(4)
    logits[rows, batch.answer] = torch.tensor([3.0, 2.0, 1.0, -1.0])
    check = tasks.check_task(logits, batch)
    assert check.accuracy == 0.75 and check.mean_logit_diff == pytest.approx(1.25) and check.passed
    logits[rows, batch.answer] = -2.0
    failed = tasks.check_task(logits, batch)
    assert not failed.passed and "WARNING" in failed.line()
