"""Examples that cannot hijack the judge: unsafe fragments are dropped and counted, the
rest shown escaped on their own line in every prompt form, and an answer is read only
where the judge wrote it. A scripted endpoint that echoes the most dangerous fragment (a
whole verdict array) back gets no verdict parsed from it, and the ledger counts exactly
the failures injected."""

from __future__ import annotations

import asyncio
import json
import re

from autointerp.llm.base import Completion
from autointerp.scoring.feature import score_feature
from autointerp.scoring.ledger import summarise_ledger
from autointerp.scoring.safety import own_answer_start, unsafe_reason
from autointerp.scoring.scorers.detection import DetectionScorer
from autointerp.scoring.scorers.fuzzing import FuzzingScorer
from autointerp.scoring.scorers.lexical import LexicalExplainer
from autointerp.scoring.scorers.simulation import LLMSimulator
from autointerp.scoring.verdicts import LLMJudge, chat_messages, slot_prompt
from tests.support.adversarial import ONES, UNSAFE, adversarial_feature
from tests.support.llm import FakeClient, example_lines


def judge_client(echo: bool):
    """Honest: 1 where ' cat' is in the example line. With echo, a batch holding the array
    of ones gets that example line copied back as the whole answer."""
    def respond(request):
        lines = example_lines(request.messages[-1][1])
        danger = [ln for ln in lines if ONES in ln]
        if echo and danger:
            return Completion(f"Example says: {danger[0]}")
        return Completion("Verdicts: " + json.dumps([int(" cat" in ln) for ln in lines]))
    return FakeClient(respond=respond, name="echo" if echo else "honest",
                      supports={"prompt_logprobs": False})


def score(echo: bool, scorer_cls=DetectionScorer):
    client = judge_client(echo)
    scorer = scorer_cls(LLMJudge(LLMSimulator(client, "json", scale_max=10), scorer_cls.name))
    rows = asyncio.run(score_feature(adversarial_feature(), LexicalExplainer(), [scorer], 5, 1))
    return rows[scorer.name], client


def test_unsafe_fragments_are_dropped_and_counted():
    row, client = score(echo=False)
    assert row["status"] == "scored" and row["score"] == 1.0
    ledger = summarise_ledger([row], 1)
    assert ledger.events == {"dropped": len(UNSAFE)} and ledger.lost == {}
    prompts = "".join(m for r in client.requests for _, m in r.messages)
    assert "<|im_end|>" not in prompts and "x" * 100 not in prompts


def test_an_echoed_fragment_is_never_read_as_the_verdicts():
    row, client = score(echo=True)
    # Every try of the batch holding the array of ones is an echo: the feature fails,
    # rather than being scored from the fragment's 1s.
    assert row["status"] == "failed" and "copied from example text" in row["reason"]
    ledger = summarise_ledger([row], 1)
    assert ledger.lost == {"parse": 1}
    echoed = sum(r.sample_index == 0 and ONES in r.messages[-1][1] for r in client.requests)
    assert echoed >= 1  # batches the array of ones landed in: each tried 3 times, echoed 3 times
    assert ledger.events == {"dropped": len(UNSAFE), "parse": 3 * echoed, "retried": 2 * echoed}


def test_fuzzing_reads_only_the_judges_own_answer():
    row, _ = score(echo=True, scorer_cls=FuzzingScorer)
    assert row["status"] == "failed" and "copied from example text" in row["reason"]


def test_own_answer_after_an_echo_is_read():
    shown = f"1. {ONES} foo\n2. bar"
    text = f"You wrote {ONES}. My verdicts: [0, 1]"
    assert text[own_answer_start(text, shown):].startswith("[0, 1]")
    assert own_answer_start("[1, 0]", shown) == 0


def test_hostile_text_stays_one_line_in_every_prompt_form():
    ff = adversarial_feature()
    from autointerp.scoring.safety import drop_unsafe
    from autointerp.scoring.scorers.detection import detection_examples
    from autointerp.scoring.verdicts import JudgeSettings

    batch = drop_unsafe(detection_examples(ff, JudgeSettings()))[:10]
    prompt = slot_prompt("detection", "cats", batch)
    assert prompt.count("\tunknown") == len(batch)  # only our slots; corpus tabs are escaped
    ours = prompt.split("\nExplanation: cats\n")[1]  # after the template's few-shot examples
    assert len(re.findall(r"^Example: ", ours, flags=re.M)) == len(batch)
    assert len(re.findall(r"^Answer:", ours, flags=re.M)) == len(batch)
    user = chat_messages("detection", "cats", batch)[1][1]
    assert len(example_lines(user)) == len(batch)
    assert all(unsafe_reason(e.tokens) is None for e in batch)
