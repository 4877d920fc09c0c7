"""The explainer: an LLM reads a feature's top fragments and says what it detects.

Prompt of Bills et al. (2023): the fragments as `token<TAB>activation` lines, the
activations scaled to integers 0..10 against the maximum over the fragments shown,
after few-shot examples, ending "the main thing this feature does is find". The
answer is cleaned into one line of bounded length (parsing.clean_explanation).
"""

from __future__ import annotations

from autointerp.llm.base import CompletionRequest, LLMClient
from autointerp.scoring.ledger import note
from autointerp.scoring.parsing import (
    EXPLANATION_DECIDED,
    ParseError,
    clean_explanation,
    fewshot_examples,
    format_records,
    render,
    scale_activations,
    template,
)
from autointerp.types import Explanation, Fragment

RETRY_STRIDE = 1000
"""A retry of sample i asks with sample_index i + k * RETRY_STRIDE: a new cache key, and
never the index of another of the N samples of --explanations-per-feature."""


class ExplanationFailed(Exception):
    """No usable explanation after bounded retries; the message is the reason."""


def records_block(fragments: list[Fragment], scale_max: int = 10) -> str:
    """All fragments' `<start>`..`<end>` blocks, activations scaled against the maximum
    over all of them."""
    top = max((max(f.activations, default=0.0) for f in fragments), default=0.0)
    return "\n".join(format_records(f.tokens, scale_activations(f.activations, top, scale_max))
                     for f in fragments)


def explainer_messages(fragments: list[Fragment], outputs: str = ""
                       ) -> tuple[tuple[str, str], ...]:
    """System prompt, one user/assistant pair per few-shot example, then the feature (with
    `outputs`, a paragraph on what steering it does, after its fragments)."""
    messages = [("system", template("explainer_system.txt"))]
    user = template("explainer_user.txt")
    examples = fewshot_examples()
    for i, ex in enumerate(examples, start=1):
        frags = [Fragment(tuple(t for t, _ in f), tuple(float(a) for _, a in f))
                 for f in ex["fragments"]]
        messages.append(("user", render(user, index=i, records=records_block(frags))))
        messages.append(("assistant", ex["explanation"]))
    last = render(user, index=len(examples) + 1, records=records_block(fragments))
    if outputs:  # before the closing cue ("...the main thing this feature does is find")
        head, _, cue = last.rstrip("\n").rpartition("\n")
        last = f"{head.rstrip()}\n\n{outputs}\n\n{cue}"
    messages.append(("user", last))
    return tuple(messages)


class LLMExplainer:
    """Explainer protocol (types.py) over any LLMClient."""

    def __init__(self, client: LLMClient, *, temperature: float = 0.0, max_tokens: int = 48,
                 retries: int = 3):
        self.client = client
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.retries = retries
        self.name = f"llm:{client.name}"

    def settings(self) -> dict:
        """What, beside the client, decides the explanations (part of the run id)."""
        return {"name": self.name, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "retries": self.retries, "prompt_version": 1}

    async def explain(self, fragments: list[Fragment], sample_index: int = 0) -> Explanation:
        return await self.explain_messages(explainer_messages(fragments), sample_index)

    async def explain_messages(self, messages, sample_index: int = 0) -> Explanation:
        """One explanation from the prompt `messages`, retried (sampling) when unusable."""
        reasons = []
        for attempt in range(self.retries):
            # A retry must be able to answer differently, so it samples.
            temperature = self.temperature if attempt == 0 else max(self.temperature, 0.7)
            request = CompletionRequest(model="", messages=messages, max_tokens=self.max_tokens,
                                        temperature=temperature,
                                        sample_index=sample_index + attempt * RETRY_STRIDE,
                                        answer_decided=EXPLANATION_DECIDED)
            completion = await self.client.complete(request)
            try:
                return Explanation(clean_explanation(completion.text), self.name, sample_index)
            except ParseError as e:
                reasons.append(str(e))
                note("parse", f"explanation: {e}")
                if attempt + 1 < self.retries:
                    note("retried", "explanation unusable")
        raise ExplanationFailed(f"explainer gave no usable answer in {self.retries} tries "
                                f"({reasons[-1]})")
