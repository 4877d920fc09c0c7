"""The scorer contract: what every scorer returns and how `--scorer` names are read. The
leaf of scorers/: the scorers, the judges (verdicts.py) and the registry import it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from autointerp.errors import BadInputError

SCORERS = ("simulation", "detection", "fuzzing")
OUTPUT_SCORERS = ("output", "intervention")
"""Output-side scorers (steering the feature, scoring.steered): asked for by name only, not
by 'all', since they load the subject model."""


@dataclass(frozen=True)
class ScoreRecord:
    """One explanation's score by one scorer."""

    score: float
    """The headline: pooled correlation (simulation) or balanced accuracy (detection,
    fuzzing; chance 0.5). NaN where undefined."""
    score_top: float = float("nan")
    """Simulation: top fragments only. Detection and fuzzing: NaN."""
    score_random: float = float("nan")
    auroc: float = float("nan")
    """Area under the ROC curve of P(1) (detection, fuzzing with logprobs), else NaN."""
    constant: bool = False
    """The prediction carried no information (a constant simulation, or one verdict for all)."""
    details: dict = field(default_factory=dict, compare=False)
    """JSON-able: what the report shows (predictions; examples with verdicts and truth)
    and the counts behind the score (slots without a digit, recall per quantile)."""


class Scorer(Protocol):
    name: str
    """simulation | detection | fuzzing."""

    def settings(self) -> dict:
        """What decides its scores beyond the simulator's identity (part of the run id)."""
        ...

    async def prepare(self) -> None: ...

    async def score(self, explanation: str, ff, n_shown: int) -> ScoreRecord:
        """`ff`: the feature's FeatureFragments; `n_shown`: fragments the explainer saw."""
        ...


def parse_scorers(names: Iterable[str]) -> tuple[str, ...]:
    """`--scorer` values (repeatable, 'all' for every input-side scorer) in canonical order."""
    names = [n.strip().lower() for n in names] or ["simulation"]
    unknown = sorted(set(names) - {*SCORERS, *OUTPUT_SCORERS, "all"})
    if unknown:
        raise BadInputError(f"unknown scorer {unknown[0]!r}; choose "
                            f"{', '.join(SCORERS + OUTPUT_SCORERS)} or all")
    return tuple(s for s in SCORERS + OUTPUT_SCORERS if s in names or s in SCORERS and "all" in names)
