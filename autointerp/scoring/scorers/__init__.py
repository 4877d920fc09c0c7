"""One scorer contract, one module per scorer (DESIGN.md, "The flow").

A scorer takes an explanation and one feature's fragments (it picks its own held-out
examples from them) and returns a `ScoreRecord`, or raises `ScoringFailed` with the
reason. The pipeline explains each feature once and hands that explanation to every
scorer asked for, so scorers are paired on the same explanations. The LLM options that
choose the simulator choose the model of every scorer: each scorer is built from the
simulator (its client and resolved mode), or is the lexical reference when the
simulator is lexical.
"""

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
    """`--scorer` values (repeatable, 'all' for every scorer) in canonical order."""
    names = [n.strip().lower() for n in names] or ["simulation"]
    unknown = sorted(set(names) - {*SCORERS, *OUTPUT_SCORERS, "all"})
    if unknown:
        raise BadInputError(f"unknown scorer {unknown[0]!r}; choose "
                            f"{', '.join(SCORERS + OUTPUT_SCORERS)} or all")
    return tuple(s for s in SCORERS + OUTPUT_SCORERS if s in names or s in SCORERS and "all" in names)


def make_scorers(names: Iterable[str], simulator, judge_settings=None, steer_settings=None) -> list:
    """Scorers for `names`, all scoring through `simulator`'s model (the output-side ones
    through the subject model, bound to it by scoring.steered.bind_steering)."""
    from autointerp.scoring.scorers.detection import DetectionScorer
    from autointerp.scoring.scorers.fuzzing import FuzzingScorer
    from autointerp.scoring.scorers.simulation import SimulationScorer
    from autointerp.scoring.verdicts import JudgeSettings, judge_for

    judge_settings = judge_settings or JudgeSettings()
    out = []
    for name in parse_scorers(names):
        if name in OUTPUT_SCORERS:
            out.append(_output_scorer(name, steer_settings, simulator))
        elif name == "simulation":
            out.append(SimulationScorer(simulator))
        else:
            cls = DetectionScorer if name == "detection" else FuzzingScorer
            out.append(cls(judge_for(simulator, name), judge_settings))
    return out


def _output_scorer(name: str, steer_settings, simulator):
    from autointerp.scoring.scorers.intervention import InterventionScorer
    from autointerp.scoring.scorers.output import OutputScorer
    from autointerp.scoring.steered import SteerSettings

    s = steer_settings or SteerSettings()
    if name == "output":
        return OutputScorer(s)
    client = None
    if s.intervention_by == "simulator":
        client = getattr(simulator, "client", None)
        if client is None:
            raise BadInputError("--intervention-scorer simulator needs an LLM simulator (one "
                                "that returns prompt logprobs), not the lexical one")
    return InterventionScorer(s, client)
