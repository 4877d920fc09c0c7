"""The small frozen records that flow through scoring (docs/design.md, "The flow").
Nothing gains fields as it travels; a failure is an exception or a recorded status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Fragment:
    """One 64-token eval fragment and one feature's true activations on it."""

    tokens: tuple[str, ...]
    """Decoded token strings, one per position."""
    activations: tuple[float, ...]
    """The feature's true activation at each token (>= 0)."""
    index: int = -1
    """Global eval-fragment index in the activation store (-1: not from a store)."""


@dataclass(frozen=True)
class Explanation:
    text: str
    """One line, bounded length."""
    explainer: str
    """Identity of the explainer, e.g. 'inprocess:smollm2-135m' or 'lexical'."""
    sample_index: int = 0


@dataclass(frozen=True)
class Simulation:
    """Predicted activations for each scoring fragment, aligned one-to-one with its tokens."""

    predictions: tuple[tuple[float, ...], ...]
    simulator: str
    mode: str
    """all-at-once | logprobs | json | lexical | oracle ..."""
    n_slots: int = 0
    """Activation slots read from prompt logprobs (all-at-once mode; else 0)."""
    n_no_digit: int = 0
    """Of those, slots whose top-k alternatives held no digit, read as 0 (no evidence)."""


@dataclass(frozen=True)
class Score:
    all: float
    """Pearson correlation pooled over every token of the top and random scoring fragments."""
    top: float
    random: float
    constant: bool
    """A prediction was constant, so its correlation was defined as 0."""


class ScoringFailed(Exception):
    """A scorer could not score an explanation (output misaligned or unparseable after
    bounded retries, too few examples, format ignored); the message is the reason."""


class SimulationFailed(ScoringFailed):
    """The simulator's output stayed misaligned or unparseable after bounded retries."""


class Simulator(Protocol):
    name: str
    mode: str

    async def simulate(self, explanation: str, fragments: list[Fragment]) -> Simulation:
        """Raise SimulationFailed (with the reason) when no aligned prediction can be had."""
        ...


class Explainer(Protocol):
    name: str

    async def explain(self, fragments: list[Fragment], sample_index: int = 0) -> Explanation: ...
