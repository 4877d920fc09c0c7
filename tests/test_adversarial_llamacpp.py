"""The adversarial corpus scored for real: SmolLM2 behind llama.cpp's server judges it by
detection (json mode, one chat answer per batch). Whatever the model writes,
no verdict is read from fragment text: every answer the wire saw is parsed again here,
independently, and the ledger's counts equal what the wire shows (unparsable answers,
retries, the unsafe fragments dropped)."""

from __future__ import annotations

import asyncio
import re

import pytest

from autointerp.llm.openai_client import OpenAIClient
from autointerp.scoring.feature import score_feature
from autointerp.scoring.ledger import summarise_ledger
from autointerp.scoring.scorers.detection import DetectionScorer
from autointerp.scoring.scorers.lexical import LexicalExplainer
from autointerp.scoring.scorers.simulation import LLMSimulator
from autointerp.scoring.verdicts import JudgeSettings, LLMJudge
from tests.support.adversarial import UNSAFE, adversarial_feature
from tests.support.llm import example_lines

pytestmark = pytest.mark.slow


class Recording:
    """The client contract around another client, keeping every (request, completion)."""

    def __init__(self, inner):
        self.inner, self.name, self.seen = inner, inner.name, []

    def supports(self, feature):
        return self.inner.supports(feature)

    async def complete(self, request):
        c = await self.inner.complete(request)
        self.seen.append((request, c))
        return c


def own_array(text: str, shown: list[str]) -> str | None:
    """The first array in the answer that is not a copy of example text (an independent
    reading of the rule), or None."""
    squashed = re.sub(r"\s+", "", "\n".join(shown))
    for m in re.finditer(r"\[[^\]]*\]", text):
        if re.sub(r"\s+", "", m.group(0)) not in squashed or len(m.group(0)) <= 2:
            return m.group(0)
    return None


def test_adversarial_corpus_through_llamacpp(llamacpp_server):
    """Detection, in one batch of 10 examples (6 + 6, less the 2 unsafe ones: as many as
    the array of ones has entries), so that the test costs a few calls; fuzzing takes the
    same path (tests/test_adversarial.py)."""
    client = Recording(OpenAIClient(llamacpp_server.url, "smollm2", timeout_s=300))
    judge = LLMJudge(LLMSimulator(client, "json", scale_max=10), "detection")
    scorer = DetectionScorer(judge, JudgeSettings(batch_size=10, min_per_class=4))
    ff = adversarial_feature(n_each=6)
    rows = asyncio.run(score_feature(ff, LexicalExplainer(), [scorer], 5, 1))
    row = rows[scorer.name]
    ledger = summarise_ledger([row], 1)
    assert ledger.events.get("dropped") == len(UNSAFE)
    prompts = "".join(m for r, _ in client.seen for _, m in r.messages)
    assert "<|im_end|>" not in prompts and "x" * 100 not in prompts
    unparsed = 0
    for request, c in client.seen:
        shown = example_lines(request.messages[-1][1])
        array = own_array(c.text, shown)
        try:
            values = [int(v) for v in re.findall(r"-?\d+", array or "")]
            ok = array is not None and len(values) == len(shown) and set(values) <= {0, 1}
        except ValueError:
            ok = False
        unparsed += not ok
    assert ledger.events.get("parse", 0) == unparsed
    assert ledger.events.get("retried", 0) <= unparsed
    assert ledger.n_lost == (row["status"] == "failed")
    if row["status"] == "failed":  # only after every try of a batch was unusable
        assert "unusable after 3 tries" in row["reason"] and unparsed >= 3
