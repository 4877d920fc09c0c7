"""Tasks as clean/counterfactual prompt pairs: the built-in IOI generator (Wang et al. 2022
templates, as in Cunningham et al. 2023 section 4) and a user's JSONL of pairs, tokenised
into aligned batches, plus the check that the model does the task before anything is patched.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from autointerp.errors import BadInputError

# The 15 BABA templates of Wang et al. (2022); the ABBA ones swap the first two names. Checked
# against the paper's code (HoagyC/sparse_coding test_datasets/ioi_counterfact.py at 52c22ef,
# its trailing " [A]" removed, its ABBA swap applied): templates, places and objects are equal.
# Differences: names (theirs: Wang et al.'s 100, filtered to single tokens) and the template
# order (they draw one at random per prompt; we cycle through all 30, so both kinds are even).
# [A] is the indirect object (the answer), [B] the subject. The answer token is dropped.
BABA_TEMPLATES = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
)
ABBA_TEMPLATES = tuple(t.replace("[B] and [A]", "[A] and [B]", 1) for t in BABA_TEMPLATES)
PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "house", "station")
OBJECTS = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack")
CANDIDATE_NAMES = (
    "Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy", "Anna", "Paul", "Kate",
    "Mark", "Lisa", "Sarah", "David", "Michael", "Peter", "Ben", "Alex", "Emma", "Jack", "Sam",
    "Jane", "Bob", "Alice", "Laura", "Chris", "Mike", "Rose", "Max", "Adam", "Joe", "Tim", "Eve",
)
COUNTERFACTUALS = ("abb-cbb", "abc")


@dataclass(frozen=True)
class PromptPair:
    clean: str
    counterfactual: str
    answer: str | None = None
    """Token the clean prompt should be completed with (e.g. ' Mary'); None: no logit diff."""
    distractor: str | None = None
    """The competing token (IOI: the subject) the answer must beat."""


def single_token_names(tokenizer, names=CANDIDATE_NAMES) -> list[str]:
    """Names that are one token after a space for this tokenizer, so clean and counterfactual
    prompts stay aligned position by position."""
    return [n for n in names if len(tokenizer(" " + n, add_special_tokens=False)["input_ids"]) == 1]


def make_ioi(tokenizer, n_prompts: int = 50, seed: int = 0,
             counterfactual: str = "abb-cbb") -> list[PromptPair]:
    """IOI pairs from the ABBA and BABA templates. abb-cbb replaces the indirect object with a
    third name (the paper's); abc replaces the subject's second mention instead (Wang et al.'s
    ABC distribution, which carries no IOI signal)."""
    if counterfactual not in COUNTERFACTUALS:
        raise BadInputError(f"unknown counterfactual {counterfactual!r}: use {' or '.join(COUNTERFACTUALS)}")
    if n_prompts < 1:
        raise BadInputError(f"--n-prompts must be at least 1, got {n_prompts}")
    names = single_token_names(tokenizer)
    if len(names) < 3:
        raise BadInputError(f"the tokenizer has only {len(names)} single-token names; IOI needs 3")
    rng = random.Random(seed)
    templates = ABBA_TEMPLATES + BABA_TEMPLATES
    pairs = []
    for i in range(n_prompts):
        template = templates[i % len(templates)]
        a, b, c = rng.sample(names, 3)
        fill = template.replace("[PLACE]", rng.choice(PLACES)).replace("[OBJECT]", rng.choice(OBJECTS))
        clean = fill.replace("[A]", a).replace("[B]", b)
        if counterfactual == "abb-cbb":
            cf = fill.replace("[A]", c).replace("[B]", b)
        else:  # the subject's last mention becomes C: the prompt names three people
            head, _, tail = fill.rpartition("[B]")
            cf = (head + c + tail).replace("[A]", a).replace("[B]", b)
        pairs.append(PromptPair(clean, cf, " " + a, " " + b))
    return pairs


def read_pairs(path: str | Path) -> list[PromptPair]:
    """A JSONL file, one object per line: {"clean", "counterfactual"} and optionally
    {"answer", "distractor"} (tokens, leading space included)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise BadInputError(f"cannot read prompt pairs {path}: {e.strerror}") from None
    pairs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append(PromptPair(str(row["clean"]), str(row["counterfactual"]),
                                    row.get("answer"), row.get("distractor")))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise BadInputError(f"{path} line {n}: expected a JSON object with 'clean' and "
                                "'counterfactual' strings") from None
    if not pairs:
        raise BadInputError(f"{path} holds no prompt pairs")
    return pairs


def write_pairs(pairs: list[PromptPair], path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(p.__dict__) + "\n" for p in pairs))


@dataclass(frozen=True)
class TaskBatch:
    """Pairs tokenised, right-padded (a causal model's real positions never see padding)."""

    clean_ids: torch.Tensor  # (n_prompts, seq) long
    cf_ids: torch.Tensor  # (n_prompts, seq) long
    mask: torch.Tensor  # (n_prompts, seq) long, 1 on real tokens
    last: torch.Tensor  # (n_prompts,) index of each prompt's last real token
    answer: torch.Tensor | None  # (n_prompts,) token ids, or None when the pairs have none
    distractor: torch.Tensor | None  # (n_prompts,)

    @property
    def n_prompts(self) -> int:
        return self.clean_ids.shape[0]


def _one_token(tokenizer, text: str, what: str, n: int) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise BadInputError(f"pair {n}: the {what} {text!r} is {len(ids)} tokens; it must be one")
    return ids[0]


def tokenize_pairs(tokenizer, pairs: list[PromptPair]) -> TaskBatch:
    """Refuses pairs whose prompts differ in token count: patching is position by position."""
    clean, cf, answers, distractors = [], [], [], []
    for n, p in enumerate(pairs, 1):
        a = tokenizer(p.clean)["input_ids"]
        b = tokenizer(p.counterfactual)["input_ids"]
        if len(a) != len(b):
            raise BadInputError(f"pair {n}: clean and counterfactual prompts are {len(a)} and "
                                f"{len(b)} tokens; they must align position by position")
        clean.append(a)
        cf.append(b)
        if p.answer is not None and p.distractor is not None:
            answers.append(_one_token(tokenizer, p.answer, "answer", n))
            distractors.append(_one_token(tokenizer, p.distractor, "distractor", n))
    if answers and len(answers) != len(pairs):
        raise BadInputError("give an answer and a distractor for every pair or for none")
    seq = max(len(a) for a in clean)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def padded(rows):
        return torch.tensor([r + [pad] * (seq - len(r)) for r in rows], dtype=torch.long)

    lengths = torch.tensor([len(a) for a in clean])
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    return TaskBatch(padded(clean), padded(cf), mask, lengths - 1,
                     torch.tensor(answers) if answers else None,
                     torch.tensor(distractors) if answers else None)


@dataclass(frozen=True)
class TaskCheck:
    """Does the model do the task on the clean prompts?"""

    n_prompts: int
    accuracy: float
    """Share of prompts where the answer's logit beats the distractor's."""
    mean_logit_diff: float
    passed: bool

    def line(self) -> str:
        verdict = "does the task" if self.passed else "WARNING: the model does NOT do this task"
        return (f"task check: answer beats distractor on {self.accuracy:.0%} of {self.n_prompts} "
                f"prompts, mean logit difference {self.mean_logit_diff:.2f}: {verdict}")


def check_task(clean_logits: torch.Tensor, batch: TaskBatch, min_accuracy: float = 0.6) -> TaskCheck | None:
    """From the clean run's last-position logits (n_prompts, vocab); None without answers.
    Passing needs a positive mean logit difference and the answer ahead on `min_accuracy`."""
    if batch.answer is None:
        return None
    rows = torch.arange(batch.n_prompts)
    diff = (clean_logits[rows, batch.answer] - clean_logits[rows, batch.distractor]).float()
    accuracy = float((diff > 0).float().mean())
    mean = float(diff.mean())
    return TaskCheck(batch.n_prompts, accuracy, mean, accuracy >= min_accuracy and mean > 0)
