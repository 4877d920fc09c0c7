"""The output-side scores of planted word directions on SmolLM2-135M against random
directions of the same norm, every direction steered at the same KL (the self-tests use 20
random directions and KL 2; the claims here are about 200 and the scorers' default KL).

    .venv/bin/python bench/output_null.py --n-random 200 --prompts 16 --intervention-prompts 40

Prints (1) each planted word's output score, the random directions' 95th percentile and
where each planted score ranks among them; (2) the intervention score of the planted
" Paris" direction and of a random direction, with SmolLM2 itself as scorer: the
explanation "Paris" against the other planted words' explanations (shuffled), the mean
difference over the prompts with its 95% bootstrap CI; (3) the forward passes and seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from autointerp.causal.steering import random_direction
    from autointerp.scoring.scorers.intervention import deltas, vs_null
    from autointerp.scoring.scorers.output import score_direction, steer_feature
    from autointerp.scoring.selftest_outputs import (
        PLANTED_WORDS,
        OutputSelftestSettings,
        _words,
        planted_direction,
        selftest_context,
    )
    from autointerp.scoring.steered import SteerSettings

    ap = argparse.ArgumentParser()
    ap.add_argument("--n-random", type=int, default=200)
    ap.add_argument("--n-planted", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=16, help="prompts of part (1)")
    ap.add_argument("--intervention-prompts", type=int, default=40, help="prompts of part (2)")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--target-kl", type=float, default=0.5)
    ap.add_argument("--intervention-kl", type=float, default=2.0,
                    help="target KL of part (2); the self-test's")
    ap.add_argument("--no-intervention", action="store_true", help="part (1) only")
    ap.add_argument("--hook", default="resid.15")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    steer = SteerSettings(target_kl=a.target_kl, n_prompts=a.prompts, prompt_tokens=a.prompt_tokens)
    ctx = selftest_context(steer, OutputSelftestSettings(hook=a.hook), device=a.device)
    started = time.perf_counter()
    words = _words(ctx, a.n_planted)
    dirs = {w: planted_direction(ctx, t) for t, w, _ in words}
    planted = {w: score_direction(ctx, d, None, 0) for w, d in dirs.items()}
    like = dirs[words[0][1]]
    randoms = []
    for i in range(a.n_random):
        try:
            randoms.append(score_direction(ctx, random_direction(like, i), None, 0).score)
        except Exception as e:  # noqa: BLE001 - a direction that cannot reach the KL
            print(f"random direction {i}: {e}")
    p95 = float(np.percentile(randoms, 95))
    print(f"(1) {len(randoms)} random directions at KL {a.target_kl}, {a.prompts} prompts x "
          f"{a.prompt_tokens} tokens, {a.hook}: median {np.median(randoms):.5f}, 95th "
          f"percentile {p95:.5f}, max {max(randoms):.5f}")
    for word, rec in planted.items():
        above = float(np.mean([rec.score > r for r in randoms]))
        print(f"    {word!r}: output score {rec.score:.5f} (above {above:.1%} of random; "
              f"KL {rec.details['kl']:.3f} at s={rec.details['strength']:.3g})", flush=True)

    from dataclasses import replace

    if a.no_intervention:
        print(f"(3) {sum(s.n_forward for s in ctx._steerers.values())} forward passes, "
              f"{time.perf_counter() - started:.0f} s")
        return
    n_forward = sum(s.n_forward for s in ctx._steerers.values())
    ctx = selftest_context(replace(steer, target_kl=a.intervention_kl,
                                   n_prompts=a.intervention_prompts),
                           OutputSelftestSettings(hook=a.hook), loaded=ctx.loaded)
    texts = [e for _, e in PLANTED_WORDS]
    paris = dirs[words[0][1]]
    print(f"(2) intervention at KL {a.intervention_kl}: explanation {texts[0]!r} against "
          f"{texts[1:]} (shuffled), {a.intervention_prompts} prompts, 8-token continuations")
    for name, d in (("planted ' Paris'", paris), ("random direction", random_direction(paris, 0))):
        steered = steer_feature(ctx, d, None, 0)
        conts, _ = ctx.continuations(d, steered["steerer"], steered["calibration"].strength)
        per = deltas(ctx, conts, steered["steerer"].prompts, texts)
        v = vs_null(per[0], per[1:])
        print(f"    {name}: 'Paris' {per[0].mean():.3f}, shuffled {v['null_score']:.3f}, "
              f"difference {v['vs_null']:.3f} [{v['vs_null_lo']:.3f}, {v['vs_null_hi']:.3f}] "
              f"(CI {'excludes' if v['vs_null_lo'] > 0 or v['vs_null_hi'] < 0 else 'includes'} 0)",
              flush=True)
    n = n_forward + sum(s.n_forward for s in ctx._steerers.values())
    print(f"(3) {n} forward passes, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
