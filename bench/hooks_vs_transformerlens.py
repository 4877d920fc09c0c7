"""Max |ours - TransformerLens| / spread (max - min) for every hook point of the committed
TransformerLens fixtures (tests/fixtures/transformerlens), fp32, processed and unprocessed
weights, plus TransformerBridge's mlp.hook_in. The figures of docs/hooks-and-formats.md.

    .venv/bin/python bench/hooks_vs_transformerlens.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from autointerp.harvest.hooks import capture
from autointerp.harvest.models import load_causal_lm, parse_hook
from tests.test_hooks_transformerlens import ours_for, transform_for

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "transformerlens"


def main() -> None:
    torch.set_num_threads(1)
    print("| family | weights | TransformerLens hook | ours | max abs diff / spread |")
    print("|---|---|---|---|---|")
    for family in ("gpt2", "gpt_neox", "gpt_neox_sequential", "llama", "gemma2"):
        lm = load_causal_lm(str(FIXTURES / family), device="cpu", dtype="float32")
        for variant in ("processed", "unprocessed", "bridge"):
            ref = load_file(str(FIXTURES / family / f"{variant}.safetensors"))
            for name in sorted(k for k in ref if k not in ("tokens", "logits")):
                hook = parse_hook(ours_for(family, name), lm.n_layers)
                ours = capture(lm, hook, ref["tokens"],
                               input_transform=transform_for(variant, hook.kind))
                spread = (ref[name].max() - ref[name].min()).item()
                err = (ours - ref[name]).abs().max().item() / spread
                print(f"| {family} | {variant} | {name} | {hook.name} | {err:.1e} |")


if __name__ == "__main__":
    main()
