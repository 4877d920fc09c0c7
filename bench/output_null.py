"""The output score of planted word directions on SmolLM2-135M against N random directions
of the same norm (the test uses 4; the claim is about 200), each steered at the same KL.

    .venv/bin/python bench/output_null.py --n-random 200 --prompts 16 --prompt-tokens 16

Prints each planted word's output score, the random directions' 95th percentile, where each
planted score ranks among them, and the calibration cost (forward passes, seconds).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from autointerp.causal.steering import random_direction
    from autointerp.scoring.scorers.output import score_direction
    from autointerp.scoring.selftest_outputs import (
        OutputSelftestSettings,
        _words,
        planted_direction,
        selftest_context,
    )
    from autointerp.scoring.steered import SteerSettings

    ap = argparse.ArgumentParser()
    ap.add_argument("--n-random", type=int, default=200)
    ap.add_argument("--n-planted", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--target-kl", type=float, default=0.5)
    ap.add_argument("--hook", default="resid.20")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    steer = SteerSettings(target_kl=a.target_kl, n_prompts=a.prompts, prompt_tokens=a.prompt_tokens)
    ctx = selftest_context(steer, OutputSelftestSettings(hook=a.hook), device=a.device)
    started = time.perf_counter()
    words = _words(ctx, a.n_planted)
    planted = {w: score_direction(ctx, planted_direction(ctx, t), None, 0) for t, w, _ in words}
    like = planted_direction(ctx, words[0][0])
    randoms = []
    for i in range(a.n_random):
        randoms.append(score_direction(ctx, random_direction(like, i), None, 0).score)
    p95 = float(np.percentile(randoms, 95))
    print(f"{a.n_random} random directions at KL {a.target_kl}, {a.prompts} prompts x "
          f"{a.prompt_tokens} tokens, {a.hook}: 95th percentile {p95:.5f}, max {max(randoms):.5f}")
    for word, rec in planted.items():
        above = float(np.mean([rec.score > r for r in randoms]))
        print(f"{word!r}: output score {rec.score:.5f} (above {above:.1%} of random; "
              f"KL {rec.details['kl']:.3f} at s={rec.details['strength']:.3g})")
    n = sum(s.n_forward for s in ctx._steerers.values())
    print(f"{n} forward passes, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
