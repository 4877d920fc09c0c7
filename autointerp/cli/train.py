"""`autointerp train`: train a sparse autoencoder on an activation store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autointerp.cli import app
from autointerp.cli.options import Arch, DeviceOpt, OverwriteOpt, SeedOpt, deprecated


@app.command()
def train(
    acts: Annotated[list[Path], typer.Option(
        "--acts", help="Activation store folder (from `autointerp harvest`); repeat it to train one "
        "SAE per store, spread over the torchrun ranks.")],
    arch: Annotated[Arch, typer.Option("--arch", help="tied (the paper's), relu (untied L1) or topk.")],
    out: Annotated[Path, typer.Option(
        "--out", help="Folder to write the dictionary (and its checkpoint) to; with several --acts, "
        "the folder holding one dictionary per store, named after the store's folder.")],
    ratio: Annotated[float, typer.Option("--ratio", help="Features per activation dimension.")] = 8.0,
    l1: Annotated[float | None, typer.Option(
        "--l1", help="L1 coefficient for tied/relu, in units where E||x - mean||^2 = 1 (default 0.1).")] = None,
    k: Annotated[int | None, typer.Option("--k", help="Active latents per token for topk (default 32).")] = None,
    train_tokens: Annotated[int | None, typer.Option(
        "--train-tokens", help="Training activations to consume (default: one pass over the store).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Activations per Adam step.")] = 4096,
    lr: Annotated[float | None, typer.Option(
        "--lr", help="Adam learning rate (default 2e-4 / sqrt(n_features / 16384)).")] = None,
    checkpoint_every: Annotated[int, typer.Option(
        "--checkpoint-every", help="Steps between checkpoints that a rerun resumes from.")] = 1000,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    tokens: Annotated[int | None, typer.Option("--tokens", hidden=True, help="Deprecated: --train-tokens.")] = None,
) -> None:
    """Train an SAE; a rerun resumes from the checkpoint in --out. Under `torchrun
    --nproc_per_node N` the ranks train one SAE data-parallel (--batch-size is the global batch),
    or, given several --acts, one SAE per store spread over the ranks."""
    from autointerp.cli.display import print_dictionary
    from autointerp.distributed import current_world
    from autointerp.errors import BadInputError
    from autointerp.harvest.store import ActivationStore
    from autointerp.sae.config import TrainConfig
    from autointerp.sae.run import train_from_store, train_spread

    train_tokens = deprecated("--tokens", "--train-tokens", tokens, train_tokens, None)
    stores = [ActivationStore(path) for path in acts]
    outs = [out] if len(acts) == 1 else [out / path.resolve().name for path in acts]
    if len(set(outs)) != len(outs):
        raise BadInputError("several --acts need store folders of different names (each names its dictionary)")
    jobs = [(store, path, TrainConfig(
        arch=arch.value, n_features=max(1, round(ratio * store.d_model)),
        n_tokens=store.n_train_tokens if train_tokens is None else train_tokens, l1=l1, k=k,
        batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=checkpoint_every))
        for store, path in zip(stores, outs, strict=True)]
    results = ([train_from_store(*jobs[0], device, overwrite)] if len(jobs) == 1
               else train_spread(jobs, device, overwrite))
    if not current_world().is_main:
        return
    for (dictionary, reused), path in zip(results, outs, strict=True):
        if reused:
            typer.echo(f"{path} already holds this dictionary; nothing to do")
        print_dictionary(dictionary, path)
