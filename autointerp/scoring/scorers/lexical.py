"""The lexical baseline: explain and simulate a feature by token identity alone.

No LLM, deterministic, offline. The explanation lists the few tokens that
carry most of the activation in the explainer's fragments, each with its mean
activation on a 0..10 scale; the simulation predicts that weight wherever one of
the listed tokens occurs and 0 elsewhere. Its score measures how much of a feature
token identity explains; an LLM explanation worth having should beat it.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

from autointerp.scoring.explain import ExplanationFailed
from autointerp.types import Explanation, Fragment, Simulation, SimulationFailed

_PAIR = re.compile(r'("(?:[^"\\]|\\.)*")\s*\((\d+)\)')
_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")


def token_key(token: str) -> str:
    """Tokens compared without case or surrounding space (' The' and 'the' are one word);
    a whitespace-only token keeps its whitespace."""
    return token.strip().lower() or token


def format_explanation(weights: dict[str, int]) -> str:
    return "tokens " + ", ".join(f"{json.dumps(k, ensure_ascii=False)} ({w})"
                                 for k, w in weights.items())


def parse_explanation(text: str) -> dict[str, float]:
    """Token -> weight. A lexical explanation gives both; from any other explanation
    the quoted words are read, each with weight 10 (so "the word 'the'" works)."""
    pairs = {token_key(json.loads(tok)): float(w) for tok, w in _PAIR.findall(text)}
    if pairs:
        return pairs
    return {token_key(a or b): 10.0 for a, b in _QUOTED.findall(text)}


class LexicalExplainer:
    name = "lexical"

    def __init__(self, share: float = 0.8, max_tokens: int = 5):
        self.share = share
        """Tokens are listed until they carry this share of the total activation."""
        self.max_tokens = max_tokens

    def settings(self) -> dict:
        return {"name": self.name, "share": self.share, "max_tokens": self.max_tokens}

    async def explain(self, fragments: list[Fragment], sample_index: int = 0) -> Explanation:
        total: dict[str, float] = defaultdict(float)
        count: dict[str, int] = defaultdict(int)
        for frag in fragments:
            for tok, act in zip(frag.tokens, frag.activations, strict=True):
                if act > 0:
                    total[token_key(tok)] += act
                    count[token_key(tok)] += 1
        mass = sum(total.values())
        if mass <= 0:
            raise ExplanationFailed("the feature is zero on every explainer fragment")
        chosen, covered = [], 0.0
        for key in sorted(total, key=lambda k: (-total[k], k)):  # ties broken by text
            chosen.append(key)
            covered += total[key]
            if covered >= self.share * mass or len(chosen) == self.max_tokens:
                break
        means = {k: total[k] / count[k] for k in chosen}
        top = max(means.values())
        weights = {k: max(1, round(10 * m / top)) for k, m in means.items()}
        return Explanation(format_explanation(weights), self.name, sample_index)


class LexicalSimulator:
    name = "lexical"
    mode = "lexical"

    def settings(self) -> dict:
        return {"name": self.name, "mode": self.mode}

    async def prepare(self) -> None:
        return None

    async def simulate(self, explanation: str, fragments: list[Fragment]) -> Simulation:
        weights = parse_explanation(explanation)
        if not weights:
            raise SimulationFailed("the lexical simulator found no tokens in the explanation")
        preds = tuple(tuple(weights.get(token_key(t), 0.0) for t in f.tokens) for f in fragments)
        return Simulation(preds, self.name, self.mode)


class LexicalJudge:
    """Token-list detection and fuzzing: deterministic and offline. Detection: P(1) is the
    largest listed weight among the example's tokens (over 10), so 1 when any listed token
    occurs. Fuzzing: P(1) is the share of marked tokens that are listed, 1 when most are."""

    name = "lexical"
    mode = "lexical"

    def __init__(self, task: str):
        self.task = task

    def settings(self) -> dict:
        return {"name": self.name, "mode": self.mode, "task": self.task}

    async def prepare(self) -> None:
        return None

    async def judge(self, explanation: str, batch) -> list:
        from autointerp.scoring.verdicts import Verdict
        from autointerp.types import ScoringFailed

        weights = parse_explanation(explanation)
        if not weights:
            raise ScoringFailed("the lexical judge found no tokens in the explanation")
        out = []
        for ex in batch:
            if self.task == "detection":
                p = max((weights.get(token_key(t), 0.0) for t in ex.tokens), default=0.0) / 10
                out.append(Verdict(int(p > 0), min(1.0, p)))
            else:
                marked = [token_key(ex.tokens[i]) for i in ex.marks]
                p = sum(k in weights for k in marked) / max(1, len(marked))
                out.append(Verdict(int(p >= 0.5), p))
        return out
