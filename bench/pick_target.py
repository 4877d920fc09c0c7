"""Candidate circuit targets (not a test): features of a dictionary with their firing rate
on the store's eval fragments and the tokens carrying most of their activation, so a
target for `autointerp circuit` can be chosen by what it fires on.

    python bench/pick_target.py --dict DIR --acts STORE [--n 20] [--min-rate 0.002]
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import torch

from autointerp.dictionaries.sources import load_dictionary
from autointerp.harvest.store import ActivationStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dict", required=True)
    ap.add_argument("--acts", required=True)
    ap.add_argument("--n", type=int, default=20, help="Features listed.")
    ap.add_argument("--min-rate", type=float, default=0.002, help="Least share of tokens fired on.")
    ap.add_argument("--max-rate", type=float, default=0.05, help="Most share of tokens fired on.")
    args = ap.parse_args()
    d, store = load_dictionary(args.dict), ActivationStore(args.acts)
    tok = store.tokenizer()
    fired = torch.zeros(d.n_features)
    mass: dict[int, Counter] = defaultdict(Counter)
    n_tokens = 0
    with torch.no_grad():
        for chunk in store.eval_chunks():
            f = d.encode(chunk.acts.reshape(-1, chunk.acts.shape[-1]))
            ids = chunk.tokens.reshape(-1)
            n_tokens += len(ids)
            fired += (f > 0).sum(0)
            rows, cols = (f > 0).nonzero(as_tuple=True)
            for r, c, v in zip(rows.tolist(), cols.tolist(), f[rows, cols].tolist(), strict=True):
                mass[c][int(ids[r])] += v
    rate = fired / n_tokens
    ok = [i for i in range(d.n_features) if args.min_rate <= rate[i] <= args.max_rate]
    # Concentrated features first: the share of activation mass on their top 3 tokens.
    def share(i):
        total = sum(mass[i].values())
        return sum(v for _, v in mass[i].most_common(3)) / total if total else 0.0
    for i in sorted(ok, key=share, reverse=True)[:args.n]:
        top = ", ".join(repr(tok.decode([t])) for t, _ in mass[i].most_common(3))
        print(f"{i:6d}  rate {rate[i]:.4f}  top-3 share {share(i):.2f}  {top}")


if __name__ == "__main__":
    main()
