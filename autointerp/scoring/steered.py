"""What the output-side scorers share: the subject model and prompt set of one run, each
feature's KL-matched strength and its steered continuations, cached in the database.

The prompts are the first tokens of the store's eval fragments (held-out documents), in a
seeded order, leaving out the fragments the explainer was shown for the feature. The
strength, its search and the continuations are stored in `steering_cache` under a key of
everything that decides them (model weights, hook point, the direction's bytes, the
prompts, the settings), so a rerun or a second scorer of the same feature steers nothing.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from autointerp import db as dbm
from autointerp.errors import BadInputError
from autointerp.harvest.hook_names import parse_hook

if TYPE_CHECKING:  # the pipeline imports the settings; torch is imported where it steers
    import torch

    from autointerp.causal.steering import Calibration, Direction, Steerer


@dataclass(frozen=True)
class SteerSettings:
    target_kl: float = 0.5
    """Mean next-token KL(P_clean || P_steered) over the prompts that sets each strength."""
    tolerance: float = 0.02
    """The search stops within this of the target."""
    n_prompts: int = 40
    """Prompts (held-out text) steered per feature."""
    prompt_tokens: int = 32
    """Tokens of each prompt (the start of an eval fragment)."""
    continuation_tokens: int = 8
    """Tokens sampled after each prompt, clean and steered (intervention scoring)."""
    top_tokens: int = 20
    """|T|: the tokens the decoder direction promotes most (output score, Arad et al.)."""
    n_null: int = 3
    """Shuffled explanations per feature for the intervention score's null."""
    intervention_by: str = "subject"
    """Who reads the intervention score's log-probs: the subject model (in process), or the
    simulator's client ('simulator': any endpoint that returns prompt logprobs)."""
    random_rows: bool = True
    """Also score a random direction of the same norm beside each feature (the
    random-direction row); doubles the steering work."""
    seed: int = 0

    def __post_init__(self):
        if self.intervention_by not in ("subject", "simulator"):
            raise BadInputError("--intervention-scorer must be subject or simulator")
        if self.target_kl <= 0 or self.n_prompts < 2 or self.prompt_tokens < 1 \
                or self.continuation_tokens < 1 or self.top_tokens < 1 or self.n_null < 1:
            raise BadInputError("steering needs a positive target KL, at least 2 prompts of at "
                                "least 1 token, and at least 1 continuation token, top token "
                                "and shuffled explanation")


def final_norm_weight(model) -> torch.Tensor | None:
    """The final norm's scale (Llama `model.norm`, GPT-2 `transformer.ln_f`, NeoX
    `final_layer_norm`), through which a direction reaches the unembedding."""
    base = getattr(model, "base_model", model)
    for name in ("norm", "ln_f", "final_layer_norm", "final_layernorm"):
        weight = getattr(getattr(base, name, None), "weight", None)
        if weight is not None:
            return weight.detach().float().cpu()
    return None


def _key(obj) -> str:
    return hashlib.sha256(dbm.dumps(obj).encode()).hexdigest()


class SteeringContext:
    """One model and hook point with its prompt source (a store's eval fragments, or any
    function with prompt_rows' signature), shared by a run's features."""

    def __init__(self, loaded, hook, prompts, settings: SteerSettings, *, dictionary=None,
                 db=None, model_id: dict | None = None, store=None):
        from autointerp.scoring.fragments import token_decoder

        self.loaded, self.hook, self.prompts, self.s = loaded, hook, prompts, settings
        self.dictionary, self.db, self.store = dictionary, db, store
        if dictionary is not None and dictionary.d_model != loaded.d_model:
            raise BadInputError(f"dictionary width {dictionary.d_model} does not match the "
                                f"model's d_model {loaded.d_model}")
        self.decode = token_decoder(loaded.tokenizer)
        W_U = loaded.model.get_output_embeddings().weight.detach().float().cpu()
        gamma = final_norm_weight(loaded.model)
        self.W_out = W_U if gamma is None else W_U * gamma  # (vocab, d_model)
        self.model_id = {"hook": hook.name, **(model_id or {"model": loaded.name,
                                                            "hash": loaded.weights_hash})}
        self._steerers: dict[tuple[int, ...], Steerer] = {}

    @classmethod
    def for_store(cls, dictionary, store, settings: SteerSettings, db=None,
                  device: str = "auto") -> SteeringContext:
        """The store's model (re-initialised as it was for the random-model control), at
        the store's hook point, prompted with its eval fragments."""
        from autointerp.causal.steering import prompt_rows
        from autointerp.harvest.models import load_causal_lm

        meta = store.meta
        loaded = load_causal_lm(meta["model"], device, "float32", meta.get("random_init"))

        def prompts(n, n_tokens, exclude, seed):
            return prompt_rows(store, n, n_tokens, exclude, seed)

        return cls(loaded, parse_hook(meta.get("hook") or "resid.0", loaded.n_layers), prompts, settings,
                   dictionary=dictionary, db=db, store=store,
                   model_id={"model": meta.get("model"), "hash": meta.get("model_hash"),
                             "random_init": meta.get("random_init")})

    def direction(self, feature: int) -> Direction:
        from autointerp.causal.steering import feature_direction

        return feature_direction(self.dictionary, feature)

    def steerer(self, exclude: set[int]) -> Steerer:
        """The prompt set that leaves out the fragments in `exclude` (one per distinct set)."""
        from autointerp.causal.steering import Steerer

        ids, chosen = self.prompts(self.s.n_prompts, self.s.prompt_tokens, exclude, self.s.seed)
        if chosen not in self._steerers:
            self._steerers[chosen] = Steerer(self.loaded, self.hook, ids)
            self._steerers[chosen].fragments = chosen
        return self._steerers[chosen]

    def promoted(self, direction: Direction) -> tuple[list[int], list[int]]:
        """(T, the top_tokens token ids the direction promotes most; the most suppressed):
        the direction through the final norm's scale and the unembedding."""
        logits = self.W_out @ direction.vector  # (vocab,)
        k = self.s.top_tokens
        return logits.topk(k).indices.tolist(), (-logits).topk(k).indices.tolist()

    def _cached(self, what: str, key_obj: dict, make):
        key = _key({"what": what, **self.model_id, **key_obj})
        if self.db is not None:
            rows = list(self.db.query("select value from steering_cache where key = ?", [key])) \
                if self.db["steering_cache"].exists() else []
            if rows:
                return dbm.loads(rows[0]["value"]), True
        value = make()
        if self.db is not None:
            self.db["steering_cache"].upsert({"key": key, "what": what, "value": dbm.dumps(value),
                                              "created_at": dbm.now()}, pk="key")
        return value, False

    def _base_key(self, direction: Direction, steerer: Steerer) -> dict:
        raw = direction.vector.numpy().astype(np.float32).tobytes()
        return {"direction": hashlib.sha256(raw).hexdigest(), "input_norm": direction.input_norm,
                "prompts": list(steerer.fragments), "prompt_tokens": self.s.prompt_tokens,
                "target_kl": self.s.target_kl, "tolerance": self.s.tolerance}

    def calibration(self, direction: Direction, steerer: Steerer) -> tuple[Calibration, bool]:
        """The KL-matched strength (cached), and whether it came from the cache."""
        from autointerp.causal.steering import Calibration

        def make():
            return asdict(steerer.calibrate(direction, self.s.target_kl, self.s.tolerance))

        value, hit = self._cached("calibration", self._base_key(direction, steerer), make)
        value["steps"] = tuple(tuple(p) for p in value["steps"])
        return Calibration(**value), hit

    def continuations(self, direction: Direction, steerer: Steerer, strength: float
                      ) -> tuple[dict, bool]:
        """{"clean": [[ids]], "steered": [[ids]]}: sampled continuations (cached)."""
        def make():
            n, seed = self.s.continuation_tokens, self.s.seed
            return {"clean": steerer.generate(None, 0.0, n, seed).tolist(),
                    "steered": steerer.generate(direction, strength, n, seed).tolist()}

        key = {**self._base_key(direction, steerer), "strength": strength,
               "n_tokens": self.s.continuation_tokens, "seed": self.s.seed}
        return self._cached("continuations", key, make)


def timed_costs(steerer: Steerer, before: dict, started: float) -> dict:
    """A feature's share of the steerer's counters (the steerer is shared by features that
    run one after another in one event loop thread, so the difference is this feature's)."""
    now = steerer.costs()
    return {"forward_passes": now["forward_passes"] - before["forward_passes"],
            "generated_tokens": now["generated_tokens"] - before["generated_tokens"],
            "seconds": round(time.perf_counter() - started, 3)}


def bind_steering(scorers, dictionary_path, store, db, device: str = "auto") -> None:
    """Give the output-side scorers among `scorers` the run's model, dictionary and prompts
    (one context, loaded only when one of them is asked for)."""
    wanting = [s for s in scorers if hasattr(s, "bind")]
    if not wanting:
        return
    from autointerp.dictionaries.sources import load_dictionary

    ctx = SteeringContext.for_store(load_dictionary(dictionary_path), store, wanting[0].s, db, device)
    for scorer in wanting:
        scorer.bind(ctx)
