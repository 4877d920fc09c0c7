"""Cost benchmark (not a test): LLM calls and prompt + completion tokens per feature, for
each scorer at default settings, counted with the real SmolLM2 tokenizer (its chat
template for chat requests).

    python bench/cost.py                              # our scorers only
    python bench/cost.py --delphi-src PATH            # also delphi's, from a checkout of
                                                      # EleutherAI/delphi (its prompt modules)

Every request our scorers would send for a feature is built by the same functions the
scorers call (explainer_messages, all_at_once_prompt, slot_prompt, chat_messages), on
real text: 64-token fragments of the builtin corpus with a seeded synthetic feature
(it fires in 25% of fragments). Completions: 1 token for prompt-logprob modes (the one
token an endpoint must generate), else the tokens of a well-formed answer. Two request
styles: prompt logprobs (all-at-once; in process, vLLM, llama.cpp) and chat (logprobs
or json; OpenAI-style endpoints).

delphi (its defaults: 50 activating + 50 non-activating examples of 32 tokens per
scorer, 5 per prompt, its detection and fuzzing prompts with 3 few-shot examples each)
is counted on the same held-out examples (its 32-token windows of them, ours of
--example-tokens) with its own prompt functions, loaded from the checkout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import numpy as np

from autointerp.scoring.explain import explainer_messages
from autointerp.scoring.fragments import FeatureFragments
from autointerp.scoring.planted import smollm2_tokenizer, text_fragments
from autointerp.scoring.scorers.detection import detection_examples
from autointerp.scoring.scorers.fuzzing import fuzzing_examples
from autointerp.scoring.scorers.simulation import all_at_once_prompt
from autointerp.scoring.scorers.simulation import chat_messages as simulation_messages
from autointerp.scoring.verdicts import (
    JudgeSettings,
    batches,
    chat_messages,
    render_example,
    slot_prompt,
)
from autointerp.types import Fragment

EXPLANATION = "the word 'the' at the start of a noun phrase"
DELPHI_CALLS = 41
"""delphi's default run per latent: 1 explanation + 100 detection and 100 fuzzing
examples at 5 per prompt (its config: n_examples_test 50, n_non_activating 50,
num_examples_per_scorer_prompt 5)."""


DELPHI_EXAMPLE_TOKENS = 32
"""delphi's example windows (its config: example_ctx_len 32)."""


def synthetic_feature(fragments, seed: int) -> FeatureFragments:
    """A feature on real text, fragments chosen as collect_fragments chooses them."""
    rng = np.random.default_rng(seed)
    frags = []
    for i, (_, toks) in enumerate(fragments):
        acts = np.zeros(len(toks))
        if rng.random() < 0.25:
            acts[rng.choice(len(toks), size=int(rng.integers(1, 5)), replace=False)] = \
                rng.uniform(0.2, 5.0)
        frags.append(Fragment(toks, tuple(float(a) for a in acts), i))
    firing = [f for f in frags if max(f.activations) > 0]
    zero = [f for f in frags if max(f.activations) == 0]
    top = sorted(firing, key=lambda f: -max(f.activations))[:20]
    rest = [f for f in firing if f not in top[:10]]
    order = rng.permutation(len(rest))
    shown = set(f.index for f in top[0::2][:5])
    held = [rest[int(i)] for i in order if rest[int(i)].index not in shown][:50]
    rnd = [rest[int(i)] for i in order[::-1]][:20]
    negatives = [zero[int(i)] for i in rng.permutation(len(zero))[:50]]
    return FeatureFragments(seed, len(firing), tuple(top), tuple(rnd), tuple(held),
                            tuple(negatives))


class Counter:
    def __init__(self, tokenizer):
        self.tok = tokenizer

    def chat(self, messages) -> int:
        rows = [{"role": r, "content": c} for r, c in messages]
        return self.text(self.tok.apply_chat_template(rows, add_generation_prompt=True,
                                                      tokenize=False))

    def text(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])


def our_requests(ff: FeatureFragments, c: Counter,
                 s: JudgeSettings = JudgeSettings()) -> dict[str, list[tuple[int, int]]]:
    """(prompt tokens, completion tokens) of every request, by scorer and style."""
    out = {"explanation": [(c.chat(explainer_messages(ff.explainer_fragments())),
                            c.text(EXPLANATION))]}
    scoring = ff.scoring_fragments()
    # SmolLM2 writes "10" as two tokens, so its all-at-once scale is 0..9 (simulation.py).
    out["simulation, prompt logprobs"] = [(c.text(all_at_once_prompt(EXPLANATION, f.tokens, 9)), 1)
                                          for f in scoring]
    out["simulation, chat"] = [
        (c.chat(simulation_messages(EXPLANATION, f.tokens, 10)),
         c.text(json.dumps([0] * len(f.tokens)))) for f in scoring]
    for task, make in (("detection", detection_examples), ("fuzzing", fuzzing_examples)):
        groups = batches(make(ff, s), s, ff.feature)
        out[f"{task}, prompt logprobs"] = [(c.text(slot_prompt(task, EXPLANATION, g)), 1)
                                           for g in groups]
        out[f"{task}, chat"] = [(c.chat(chat_messages(task, EXPLANATION, g)),
                                 c.text(json.dumps([1] * len(g)).replace(" ", ""))) for g in groups]
        # What no prompt format can go below: the example lines themselves and the answers.
        out[f"{task}, examples + answers only"] = [
            (c.text("\n".join(render_example(e) for e in g)),
             c.text(json.dumps([1] * len(g)).replace(" ", ""))) for g in groups]
    return out


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def delphi_requests(ff: FeatureFragments, c: Counter, src: Path) -> dict[str, list]:
    """delphi's detection and fuzzing prompts (its own `prompt` functions) on the same
    held-out examples, 5 per prompt, as its chat scorers send them."""
    prompts = src / "delphi" / "scorers" / "classifier" / "prompts"
    out = {}
    s = JudgeSettings(batch_size=5, example_len=DELPHI_EXAMPLE_TOKENS)
    for task, make, module in (("detection", detection_examples, "detection_prompt"),
                               ("fuzzing", fuzzing_examples, "fuzz_prompt")):
        prompt = _load(prompts / f"{module}.py", f"delphi_{module}").prompt
        rows = []
        for g in batches(make(ff, s), s, ff.feature):
            texts = ["".join(f"<<{t}>>" if i in e.marks else t for i, t in enumerate(e.tokens))
                     for e in g]
            examples = "\n".join(f"Example {i}: {t}" for i, t in enumerate(texts))
            messages = [(m["role"], m["content"]) for m in prompt(examples=examples,
                                                                 explanation=EXPLANATION)]
            rows.append((c.chat(messages), c.text(json.dumps([1] * len(g)).replace(" ", ""))))
        out[f"delphi {task}"] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delphi-src", type=Path, help="A checkout of EleutherAI/delphi.")
    ap.add_argument("--n-features", type=int, default=5, help="Synthetic features averaged over.")
    ap.add_argument("--examples-per-prompt", type=int, default=JudgeSettings.batch_size,
                    help="Our detection and fuzzing: examples per prompt (score's option).")
    ap.add_argument("--example-tokens", type=int, default=JudgeSettings.example_len,
                    help="Our detection and fuzzing: tokens per example (score's option; "
                         "delphi's stay 32).")
    args = ap.parse_args()
    ours = JudgeSettings(batch_size=args.examples_per_prompt, example_len=args.example_tokens)
    tok = smollm2_tokenizer()
    from autointerp.harvest.corpus import open_corpus

    fragments = text_fragments((d.text for d in open_corpus("builtin")), tok, max_fragments=800)
    c = Counter(tok)
    totals: dict[str, list] = {}
    for seed in range(args.n_features):
        ff = synthetic_feature(fragments, seed)
        rows = our_requests(ff, c, ours)
        if args.delphi_src:
            rows |= delphi_requests(ff, c, args.delphi_src)
        for k, v in rows.items():
            totals.setdefault(k, []).append((len(v), sum(p for p, _ in v), sum(q for _, q in v),
                                             len(ff.held_out) + min(len(ff.negatives),
                                                                    len(ff.held_out))))
    print(f"per feature, mean over {args.n_features} synthetic features on the builtin corpus "
          f"(SmolLM2 tokenizer); our detection and fuzzing: {ours.batch_size} examples per "
          f"prompt, {ours.example_len} tokens each:")
    print(f"{'requests':36s} {'calls':>6s} {'prompt tok':>11s} {'completion':>11s} {'total':>8s}")
    for k, v in totals.items():
        calls, p, q = (float(np.mean([x[i] for x in v])) for i in range(3))
        print(f"{k:36s} {calls:6.1f} {p:11,.0f} {q:11,.0f} {p + q:8,.0f}")
    def tokens(rows):
        return np.mean([r[1] + r[2] for r in rows])

    for task in ("detection", "fuzzing"):
        theirs = totals.get(f"delphi {task}")
        if theirs:
            print(f"{task}: our tokens / delphi's, same held-out examples = "
                  f"{tokens(totals[f'{task}, chat']) / tokens(theirs):.3f} in chat form, "
                  f"{tokens(totals[f'{task}, prompt logprobs']) / tokens(theirs):.3f} with "
                  f"prompt logprobs (the example lines "
                  f"and answers alone: {tokens(totals[f'{task}, examples + answers only']) / tokens(theirs):.3f})")
    n = math.ceil(100 / 5)
    print(f"delphi's calls per latent at its defaults: 1 + {n} + {n} = {DELPHI_CALLS}")


if __name__ == "__main__":
    main()
