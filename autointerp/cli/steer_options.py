"""Options of the output-side scorers (`--scorer output`, `--scorer intervention`), shared
by `score` and `selftest`."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from autointerp.cli.options import EXPLAINER, SCORERS_PANEL


class InterventionBy(str, Enum):
    subject = "subject"
    simulator = "simulator"


SteerKlOpt = Annotated[float, typer.Option("--steer-kl", help="Output and intervention: the mean next-token KL(clean || steered) over the prompts that sets each feature's steering strength.", rich_help_panel=SCORERS_PANEL)]
SteerPromptsOpt = Annotated[int, typer.Option("--steer-prompts", help="Output and intervention: held-out prompts steered per feature (the start of eval fragments the explainer did not see).", rich_help_panel=SCORERS_PANEL)]
SteerTokensOpt = Annotated[int, typer.Option("--steer-prompt-tokens", help="Output and intervention: tokens per prompt (at most the store's fragment length).", rich_help_panel=SCORERS_PANEL)]
ContinuationOpt = Annotated[int, typer.Option("--continuation-tokens", help="Intervention: tokens sampled after each prompt, clean and steered, with a fixed seed.", rich_help_panel=SCORERS_PANEL)]
ExplainOutputsOpt = Annotated[bool, typer.Option("--explain-outputs", help="Also explain each feature with the tokens steering it makes most and least likely beside its top fragments (Gur-Arieh et al. 2025), and score those output-centric explanations with every scorer, as a second run per dictionary labelled '+outputs'. Needs an LLM explainer and --workers 1.", rich_help_panel=EXPLAINER)]
InterventionByOpt = Annotated[InterventionBy, typer.Option("--intervention-scorer", help="Intervention: who reads the explanation's log-probs: the steered subject model itself (in process), or the scoring model's client (any endpoint that returns prompt logprobs).", rich_help_panel=SCORERS_PANEL)]


def steer_settings(steer_kl: float, steer_prompts: int, steer_prompt_tokens: int,
                   continuation_tokens: int, seed: int = 0, intervention_by: str = "subject"):
    from autointerp.scoring.steered import SteerSettings

    return SteerSettings(target_kl=steer_kl, n_prompts=steer_prompts,
                         prompt_tokens=steer_prompt_tokens,
                         continuation_tokens=continuation_tokens, seed=seed,
                         intervention_by=intervention_by)
