"""Output-centric explanations (Gur-Arieh et al., ACL 2025, "Enhancing automated
interpretability with output-centric feature descriptions"): besides the feature's top
fragments, the explainer is told which next tokens steering the feature makes most and
least likely. Those are the tokens whose log-probability, averaged over the held-out
prompts, rises or falls most when the feature is added at its KL-matched strength (their
TokenChange), the same strength and prompts the output-side scorers use, so the
calibration is shared through `steering_cache`.

`score --explain-outputs` scores these explanations with every scorer asked for, as a
second run per dictionary labelled "+outputs" beside the ordinary one.
"""

from __future__ import annotations

from dataclasses import asdict

from autointerp.scoring.steered import SteeringContext, SteerSettings
from autointerp.types import Explanation

VERSION = 1
OUTPUTS_PARAGRAPH = ("Adding this feature to the model's activations makes these next tokens "
                     "more likely: {up}; and these less likely: {down}.")


class OutputCentricExplainer:
    """An LLM explainer that also sees the steering's most promoted and suppressed tokens."""

    outputs = True

    def __init__(self, inner, settings: SteerSettings = SteerSettings(), n_tokens: int = 10):
        if not hasattr(inner, "explain_messages"):
            raise ValueError("output-centric explanations need an LLM explainer")
        self.inner, self.s, self.n_tokens = inner, settings, n_tokens
        self.client = getattr(inner, "client", None)
        self.name = inner.name + "+outputs"
        self.ctx: SteeringContext | None = None
        self._tokens: dict[int, tuple[list[str], list[str]]] = {}

    def settings(self) -> dict:
        """The inner explainer's, and what decides the tokens shown (part of the run id)."""
        steer = {k: v for k, v in asdict(self.s).items()
                 if k in ("target_kl", "tolerance", "n_prompts", "prompt_tokens", "seed")}
        return {**self.inner.settings(), "name": self.name,
                "outputs": {"n_tokens": self.n_tokens, "steer": steer, "version": VERSION}}

    def bind(self, ctx: SteeringContext) -> None:
        """The run's model, dictionary and prompts (one dictionary at a time)."""
        self.ctx, self._tokens = ctx, {}

    def token_changes(self, ff, n_shown: int) -> tuple[list[str], list[str]]:
        """(most promoted, most suppressed) decoded tokens: the mean over the prompts of
        log p_steered - log p_clean of the next token, at the KL-matched strength; once per
        feature, however many explanations are sampled."""
        from autointerp.scoring.scorers.output import steer_feature

        if ff.feature in self._tokens:
            return self._tokens[ff.feature]
        direction = self.ctx.direction(ff.feature)
        steered = steer_feature(self.ctx, direction, ff, n_shown)
        steerer, strength = steered["steerer"], steered["calibration"].strength
        change = (steerer.last_logp(direction, strength) - steerer.logp_clean).mean(0)
        up = change.topk(self.n_tokens).indices.tolist()
        down = (-change).topk(self.n_tokens).indices.tolist()
        self._tokens[ff.feature] = self.ctx.decode(up), self.ctx.decode(down)
        return self._tokens[ff.feature]

    async def explain_steered(self, ff, n_shown: int, shown, sample_index: int = 0
                              ) -> Explanation:
        from autointerp.scoring.explain import ExplanationFailed, explainer_messages
        from autointerp.types import ScoringFailed

        if self.ctx is None:
            raise ExplanationFailed("the output-centric explainer was not given the run's model")
        try:
            up, down = self.token_changes(ff, n_shown)
        except ScoringFailed as e:  # no strength reached the target KL
            raise ExplanationFailed(f"steering: {e}") from e
        paragraph = OUTPUTS_PARAGRAPH.format(up=", ".join(map(repr, up)),
                                             down=", ".join(map(repr, down)))
        got = await self.inner.explain_messages(explainer_messages(shown, paragraph),
                                                sample_index)
        return Explanation(got.text, self.name, sample_index)
