"""The one place that turns the user's LLM choices into explainer and simulator objects:
`score`, `selftest` and the demo all build theirs here."""

from __future__ import annotations

import asyncio
import sys

from autointerp.errors import BadInputError

BACKENDS = ("inprocess", "openai", "lexical")
"""Backends of the explainer and of the scoring model (lexical: no LLM, the reference)."""
MODES = ("auto", "all-at-once", "logprobs", "json")
"""How the scoring model is read (scorers/simulation.py)."""
DEFAULT_INPROCESS_MODEL = "smollm2-135m"


def judge_settings(examples_per_prompt: int, example_tokens: int, quantiles: int):
    """Detection and fuzzing settings from the command's options (score, selftest)."""
    from autointerp.scoring.verdicts import JudgeSettings

    try:
        return JudgeSettings(n_quantiles=quantiles, batch_size=examples_per_prompt,
                             example_len=example_tokens)
    except ValueError:
        raise BadInputError(f"need --examples-per-prompt 1-50 (got {examples_per_prompt}), "
                            f"--example-tokens at least 2 (got {example_tokens}) and "
                            f"--quantiles at least 1 (got {quantiles})") from None


def make_backend(db, backend: str, model: str | None, base_url: str | None, api_key_env: str,
                 concurrency: int, device: str, role: str, cache: dict):
    """A cached LLM client, shared between explainer and simulator when they are the same.
    `role` names the options in errors: explainer or scoring."""
    if backend not in BACKENDS:
        raise BadInputError(f"unknown {role} backend {backend!r}; choose {', '.join(BACKENDS)}")
    if backend == "openai" and not model:
        raise BadInputError(f"the openai {role} backend needs --{role}-model (the endpoint's "
                            "model id)")
    from autointerp.llm.cache import CachedClient
    from autointerp.llm.factory import ClientSpec, make_client

    spec = ClientSpec(backend=backend, model=model or DEFAULT_INPROCESS_MODEL,
                      base_url=base_url if backend == "openai" else None,
                      api_key_env=api_key_env, concurrency=concurrency, device=device)
    if spec not in cache:
        cache[spec] = CachedClient(make_client(spec), db)
    return cache[spec]


def make_explainer(db, backend, model, base_url, api_key_env, concurrency, device,
                   n_explanations, cache: dict):
    if backend == "lexical":
        from autointerp.scoring.scorers.lexical import LexicalExplainer
        return LexicalExplainer()
    from autointerp.scoring.explain import LLMExplainer

    client = make_backend(db, backend, model, base_url, api_key_env, concurrency, device,
                          "explainer", cache)
    # Several explanations per feature are samples (their mean is the score); one is the
    # greedy answer.
    return LLMExplainer(client, temperature=0.0 if n_explanations == 1 else 0.7)


def make_simulator(db, backend, model, mode, base_url, api_key_env, concurrency, device,
                   cache: dict):
    """The scoring model: the simulator, from which every scorer is built."""
    from autointerp.scoring.scorers.simulation import LLMSimulator, check_mode

    check_mode(mode)
    if backend == "lexical":
        from autointerp.scoring.scorers.lexical import LexicalSimulator
        return LexicalSimulator()
    client = make_backend(db, backend, model, base_url, api_key_env, concurrency, device,
                          "scoring", cache)
    sim = LLMSimulator(client, mode)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # resolve `auto` now (cached probes), so that cache ids made from
        asyncio.run(sim.prepare())  # simulator.mode (the self-test's) name the real mode
        if sim.long_probe is not None:  # the mode auto chose at the run's prompt length, and why
            print(f"{sim.name}: {sim.note}; {sim.long_probe.line()}", file=sys.stderr)
    return sim


def make_llms(db, explainer, explainer_model, explainer_url, simulator, simulator_model,
              simulator_mode, simulator_url, api_key_env, concurrency, device,
              n_explanations) -> tuple:
    """(explainer, simulator, their clients); module-level, so that `--workers` can
    send it (with its arguments bound) to the worker processes."""
    cache: dict = {}
    sim = make_simulator(db, simulator, simulator_model, simulator_mode, simulator_url,
                         api_key_env, concurrency, device, cache)
    expl = make_explainer(db, explainer, explainer_model, explainer_url, api_key_env,
                          concurrency, device, n_explanations, cache)
    return expl, sim, list(cache.values())
