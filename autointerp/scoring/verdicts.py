"""Binary verdicts on held-out examples: what detection and fuzzing share.

Examples are windows of `example_len` tokens cut from a feature's held-out fragments
(fragments.py: never shown to the explainer; negatives checked to be zero at every
token). They are shuffled with a seed and asked about in batches; the judge answers 1
or 0 per example. Where the endpoint gives logprobs, P(1) per example gives AUROC:
prompt logprobs at an `Answer:<TAB>unknown` slot after each example (in process,
vLLM, llama.cpp echo), or the top logprobs of each digit of a chat model's JSON array.
A slot whose alternatives hold neither 0 nor 1 is no evidence (read as 0) and counted;
the feature fails when most are like that. Per feature: balanced accuracy (chance 0.5,
whatever the class balance), AUROC where P(1) exists, recall per activation quantile.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import asdict, dataclass

import numpy as np

from autointerp.llm.base import CompletionRequest
from autointerp.scoring.contrast import DENSE_HIGH, DENSE_LOW, Contrast
from autointerp.scoring.ledger import note
from autointerp.scoring.parsing import (
    ParseError,
    escape_token,
    expected_value,
    parse_int_array,
    render,
    template,
)
from autointerp.scoring.safety import drop_unsafe, parse_own_array
from autointerp.scoring.scorers.draws import draw_settings, judge_draw, score_draws
from autointerp.scoring.stats import auroc, balanced_accuracy
from autointerp.types import Fragment, ScoringFailed

SLOT = "unknown"
TASKS = {"detection": "answer 1 if it fires anywhere in an example, else 0.",
         "fuzzing": "some tokens are marked <<like this>>; answer 1 if the marked tokens are "
                    "what the explanation describes, else 0."}


@dataclass(frozen=True)
class JudgeSettings:
    n_quantiles: int = 10
    """Activation quantile bins of the held-out activating examples (recall is reported per bin)."""
    batch_size: int = 10
    """Examples per prompt (shuffled, so a batch mixes both classes)."""
    example_len: int = 21
    """Tokens per example: a window of the 64-token fragment, for an activating one ten
    tokens either side of its maximum (SAEBench's window; delphi shows 32). Shorter than
    delphi's so that detection costs under a quarter of its tokens (bench/cost.py)."""
    min_per_class: int = 5
    """Fewer examples of either class fail the feature rather than give a noisy score."""
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.batch_size <= 50 or self.n_quantiles < 1 or self.example_len < 2:
            raise ValueError("need 1 <= batch_size <= 50, n_quantiles >= 1, example_len >= 2")


@dataclass(frozen=True)
class Example:
    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    """The feature's true activations on these tokens."""
    label: int
    """Truth: 1 (fires / correctly marked) or 0."""
    quantile: int
    """Activation bin of its fragment, 0 lowest; -1 for a zero-activation fragment."""
    fragment: int
    marks: tuple[int, ...] = ()
    """Fuzzing: marked token positions."""


@dataclass(frozen=True)
class Verdict:
    answer: int
    p1: float | None
    """P(answer 1) where logprobs exist."""
    no_answer: bool = False
    """The alternatives at the slot held neither 0 nor 1 (read as 0)."""


def window(f: Fragment, length: int, start: int) -> tuple[tuple[str, ...], tuple[float, ...]]:
    start = max(0, min(start, len(f.tokens) - length))
    return f.tokens[start:start + length], f.activations[start:start + length]


def quantile_bins(maxima, n_quantiles: int) -> list[int]:
    """Bin of each value by rank: equal-count bins, 0 the lowest (delphi's quantiles)."""
    order = np.argsort(np.asarray(maxima), kind="stable")
    bins = [0] * len(order)
    for rank, i in enumerate(order):
        bins[int(i)] = rank * n_quantiles // len(order)
    return bins


def activating_examples(ff, s: JudgeSettings) -> list[Example]:
    """Held-out fragments where the feature fires, each a window around its maximum."""
    frags = ff.held_out
    bins = quantile_bins([max(f.activations) for f in frags], s.n_quantiles) if frags else []
    out = []
    for f, q in zip(frags, bins, strict=True):
        peak = int(np.argmax(f.activations))
        toks, acts = window(f, s.example_len, peak - s.example_len // 2)
        out.append(Example(toks, acts, 1, q, f.index))
    return out


def negative_examples(ff, s: JudgeSettings, n: int) -> list[Example]:
    """Up to n checked zero-activation fragments, each a seeded window."""
    out = []
    for f in ff.negatives[:n]:
        rng = np.random.default_rng([s.seed, ff.feature, f.index + 1])
        start = int(rng.integers(0, max(1, len(f.tokens) - s.example_len + 1)))
        out.append(Example(*window(f, s.example_len, start), 0, -1, f.index))
    return out


def check_counts(n_pos: int, n_neg: int, s: JudgeSettings, what: str) -> None:
    if n_pos < s.min_per_class or n_neg < s.min_per_class:
        dense = " (it fires in almost every fragment)" if n_neg < s.min_per_class else ""
        raise ScoringFailed(f"{n_pos} positive and {n_neg} negative {what} examples{dense}; "
                            f"need {s.min_per_class} of each")


_BREAKS = {c: f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
           for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
"""Characters besides tab and newline that some readers take as a line break: escaped
too, so an example stays one line however the model reads lines."""


def _line(tokens) -> str:
    return "".join(escape_token(t) for t in tokens).translate(str.maketrans(_BREAKS))


def _defang(text: str) -> str:
    """Corpus text can hold '<<' or '>>': broken apart, so only our marks read as marks."""
    text = re.sub(r"([<>])(?=[<>])", r"\1 ", text)
    return (" " if text[:1] in "<>" and text else "") + text + (" " if text[-1:] in ("<", ">") else "")


def render_example(ex: Example) -> str:
    """One line of text: tokens joined and escaped; fuzzing marks around runs of marked tokens."""
    if not ex.marks:
        return _line(ex.tokens)
    marked, out, i = set(ex.marks), [], 0
    while i < len(ex.tokens):
        j = i
        while j < len(ex.tokens) and (j in marked) == (i in marked):
            j += 1
        text = _line(ex.tokens[i:j])
        if i in marked:
            lead = text[:len(text) - len(text.lstrip())]
            text = f"{lead}<<{_defang(text[len(lead):])}>>"
        else:
            text = _defang(text)
        out.append(text)
        i = j
    return "".join(out)


def batches(examples: list[Example], s: JudgeSettings, feature: int) -> list[list[Example]]:
    order = np.random.default_rng([s.seed, feature]).permutation(len(examples))
    shuffled = [examples[int(i)] for i in order]
    return [shuffled[k:k + s.batch_size] for k in range(0, len(shuffled), s.batch_size)]


def score_verdicts(examples: list[Example], verdicts: list[Verdict], s: JudgeSettings):
    """The feature's ScoreRecord from its examples' verdicts."""
    from autointerp.scoring.scorers.base import ScoreRecord
    from autointerp.scoring.scorers.simulation import check_format

    check_format(sum(v.no_answer for v in verdicts), len(verdicts), "0 or 1")
    labels = [e.label for e in examples]
    answers = [v.answer for v in verdicts]
    probs = [v.p1 for v in verdicts]
    recall = []
    for q in range(s.n_quantiles):
        hits = [a for e, a in zip(examples, answers, strict=True) if e.label == 1 and e.quantile == q]
        recall.append(float(np.mean(hits)) if hits else None)
    rows = [{"fragment": e.fragment, "tokens": list(e.tokens), "marks": list(e.marks),
             "max_activation": max(e.activations), "label": e.label, "quantile": e.quantile,
             "answer": v.answer, "p1": v.p1} for e, v in zip(examples, verdicts, strict=True)]
    auc = auroc(labels, probs) if all(p is not None for p in probs) else math.nan
    details = {"examples": rows, "recall_per_quantile": recall,
               "no_answer": [sum(v.no_answer for v in verdicts), len(verdicts)],
               "n_positive": sum(labels), "n_negative": len(labels) - sum(labels)}
    return ScoreRecord(balanced_accuracy(labels, answers), auroc=auc,
                       constant=len(set(answers)) == 1, details=details)


async def judge_examples(judge, explanation: str, examples: list[Example], s: JudgeSettings,
                         feature: int):
    groups = batches(examples, s, feature)
    # Every batch finishes before a failure is raised, so the ledger counts each batch's
    # retries and unparsed answers, not only those that came back before the first failure.
    answers = await asyncio.gather(*(judge.judge(explanation, g) for g in groups),
                                   return_exceptions=True)
    for a in answers:
        if isinstance(a, BaseException):
            raise a
    flat_examples = [e for g in groups for e in g]
    return score_verdicts(flat_examples, [v for a in answers for v in a], s)


def slot_prompt(task: str, explanation: str, batch: list[Example]) -> str:
    """The raw prompt whose `Answer:<TAB>unknown` slots are read from prompt logprobs."""
    lines = [f"Example: {render_example(e)}\nAnswer:\t{SLOT}" for e in batch]
    return render(template(f"{task}_prompt.txt"), explanation=" ".join(explanation.split()),
                  examples="\n".join(lines))


def chat_messages(task: str, explanation: str, batch: list[Example]) -> tuple[tuple[str, str], ...]:
    """The chat request: the model writes a JSON array of 1/0, one per numbered example."""
    system = render(template("judge_chat_system.txt"), task=TASKS[task])
    examples = "\n".join(f"{i}. {render_example(e)}" for i, e in enumerate(batch, 1))
    user = render(template("judge_chat_user.txt"), explanation=" ".join(explanation.split()),
                  examples=examples, n_examples=len(batch))
    return (("system", system), ("user", user))


class JudgeScorer:
    """A scorer whose judge labels examples 1 or 0 (detection, fuzzing): subclasses name
    themselves and choose the examples; judging and metrics are shared."""

    name = ""

    def __init__(self, judge, settings: JudgeSettings = JudgeSettings(), draws: int = 1):
        self.judge, self.s, self.draws = judge, settings, draws
        """draws: seeded draws of the held-out examples per explanation (scorers/draws.py)."""

    def examples(self, ff, s: JudgeSettings) -> list[Example]:
        raise NotImplementedError

    def contrast(self, ff, s: JudgeSettings) -> Contrast | None:
        """The rule that labelled the examples, recorded with the score (None: no rule)."""
        return None

    def settings(self) -> dict:
        # The dense rule's quantiles are part of the run id: runs made before it refused
        # dense features, and a rerun must score them rather than keep those refusals.
        return {"scorer": self.name, "judge": self.judge.settings(), **asdict(self.s),
                "dense_rule": {"low": DENSE_LOW, "high": DENSE_HIGH},
                **draw_settings(self.draws)}

    async def prepare(self) -> None:
        await self.judge.prepare()

    async def score(self, explanation: str, ff, n_shown: int):
        return await score_draws(lambda k: self._score_draw(explanation, *judge_draw(
            ff, self.s, k)), self.draws)

    async def _score_draw(self, explanation: str, ff, s: JudgeSettings):
        examples = drop_unsafe(self.examples(ff, s))
        n_pos = sum(e.label for e in examples)
        check_counts(n_pos, len(examples) - n_pos, s, f"{self.name} (after safety drops)")
        record = await judge_examples(self.judge, explanation, examples, s, ff.feature)
        contrast = self.contrast(ff, s)
        if contrast is not None:
            record.details["negative_rule"] = contrast.details()
        return record


class LLMJudge:
    """Verdicts from the simulator's model, in the simulator's resolved mode."""

    def __init__(self, simulator, task: str):
        self.simulator, self.task = simulator, task
        self.name = simulator.name

    @property
    def mode(self) -> str:
        return self.simulator.mode

    def settings(self) -> dict:
        return {"name": self.name, "mode": self.mode, "task": self.task,
                "retries": self.simulator.retries, "prompt_version": 2}

    async def prepare(self) -> None:
        await self.simulator.prepare()

    async def judge(self, explanation: str, batch: list[Example]) -> list[Verdict]:
        if self.mode == "all-at-once":
            return await self._slots(explanation, batch)
        return await self._chat(explanation, batch)

    async def _slots(self, explanation: str, batch: list[Example]) -> list[Verdict]:
        from autointerp.scoring.scorers.simulation import slot_positions

        prompt = slot_prompt(self.task, explanation, batch)
        k = 1 if self.simulator.client.supports("candidate_tokens") else self.simulator.top_logprobs
        req = CompletionRequest(model="", prompt=prompt, max_tokens=1, prompt_logprobs=k,
                                candidate_tokens=("0", "1"), prompt_logprobs_after="\t",
                                prompt_logprobs_slots=len(batch))
        c = await self.simulator.ask(req)
        if not c.prompt_tokens:
            raise ScoringFailed("the endpoint returned no prompt logprobs for the verdict slots")
        slots = slot_positions(c.prompt_tokens)
        if len(slots) != len(batch):
            raise ScoringFailed(f"found {len(slots)} verdict slots for {len(batch)} examples")
        out = []
        for i in slots:
            p = expected_value(c.prompt_tokens[i], 1, exact=True)
            out.append(Verdict(0, 0.0, True) if p is None else Verdict(int(p >= 0.5), p))
        return out

    async def _chat(self, explanation: str, batch: list[Example]) -> list[Verdict]:
        from autointerp.scoring.scorers.simulation import read_logprobs

        messages = chat_messages(self.task, explanation, batch)
        logprobs, reasons = self.mode == "logprobs", []
        for attempt in range(self.simulator.retries):
            req = CompletionRequest(
                model="", messages=messages,
                max_tokens=3 * len(batch) + 16, temperature=0.0 if attempt == 0 else 0.7,
                sample_index=attempt, top_logprobs=self.simulator.top_logprobs if logprobs else 0,
                candidate_tokens=("0", "1") if logprobs else ())
            c = await self.simulator.ask(req)
            try:
                values, offsets = parse_own_array(parse_int_array, c.text, "\n".join(
                    render_example(e) for e in batch), len(batch), 1)
            except ParseError as e:
                reasons.append(str(e))
                note("parse", f"verdicts: {e}")
                if attempt + 1 < self.simulator.retries:
                    note("retried", "verdicts unusable")
                continue
            if not logprobs:
                return [Verdict(v, None) for v in values]
            probs = read_logprobs(c, values, offsets, 1)
            return [Verdict(int(p >= 0.5), p) for p in probs]
        raise ScoringFailed(f"judge output unusable after {self.simulator.retries} tries: "
                            f"{reasons[-1]}")
