"""One scorer contract, one module per scorer (docs/design.md, "The flow").

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

from autointerp.errors import BadInputError
from autointerp.scoring.scorers.base import (  # noqa: F401 (the contract, re-exported)
    OUTPUT_SCORERS,
    SCORERS,
    Scorer,
    ScoreRecord,
    parse_scorers,
)


def judge_for(simulator, task: str):
    """The judge of `task` that scores through the simulator's model (lexical for lexical)."""
    if getattr(simulator, "name", "") == "lexical":
        from autointerp.scoring.scorers.lexical import LexicalJudge
        return LexicalJudge(task)
    from autointerp.scoring.verdicts import LLMJudge

    return LLMJudge(simulator, task)


def make_scorers(names: Iterable[str], simulator, judge_settings=None, steer_settings=None,
                 draws: int = 1) -> list:
    """Scorers for `names`, all scoring through `simulator`'s model (the output-side ones
    through the subject model, bound to it by scoring.steered.bind_steering). `draws`:
    seeded draws of the held-out examples per explanation (draws.py)."""
    from autointerp.scoring.scorers.detection import DetectionScorer
    from autointerp.scoring.scorers.fuzzing import FuzzingScorer
    from autointerp.scoring.scorers.simulation import SimulationScorer
    from autointerp.scoring.verdicts import JudgeSettings

    judge_settings = judge_settings or JudgeSettings()
    out = []
    for name in parse_scorers(names):
        if name in OUTPUT_SCORERS:
            out.append(_output_scorer(name, steer_settings, simulator))
        elif name == "simulation":
            out.append(SimulationScorer(simulator, draws))
        else:
            cls = DetectionScorer if name == "detection" else FuzzingScorer
            out.append(cls(judge_for(simulator, name), judge_settings, draws))
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
