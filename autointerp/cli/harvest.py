"""`autointerp harvest`: record hook points' activations over a corpus, one store per hook point,
from a single pass (under torchrun, each rank a share of the documents)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autointerp.cli import app
from autointerp.cli.options import (
    DeviceOpt,
    InputTransform,
    ModelDtype,
    OverwriteOpt,
    SeedOpt,
    StoreDtype,
)


@app.command()
def harvest(
    layer: Annotated[int | None, typer.Option(
        "--layer", help="Decoder block index, from 0 (not needed when --hook names the layer, "
        "or for embed).")] = None,
    layers: Annotated[str | None, typer.Option(
        "--layers", help="Several blocks in one pass: a range (0-5), a list (0,2,4) or both (0-2,5); "
        "one store per hook point, under --out.")] = None,
    model: Annotated[str, typer.Option(
        "--model", help="Hugging Face id, local folder, or smollm2-135m (offline default).")] = "smollm2-135m",
    hook: Annotated[str, typer.Option(
        "--hook", help="resid (block output), resid_mid (after attention, before the MLP), mlp "
        "or attn (submodule outputs), attn_z (heads' outputs before the output projection), "
        "mlp_in (what the MLP receives), mlp_normalized (MLP input before the norm's weight), "
        "attn_post / mlp_post (after Gemma 2/3 and OLMo 2 post-norms) at each --layer(s); embed "
        "(input of block 0), token_embed (token embedding alone); or full names: resid_mid.3, "
        "blocks.3.hook_resid_pre, blocks.3.attn.hook_z (TransformerLens/sae-lens), layers.3 (sparsify). "
        "A comma-separated list (resid,mlp or embed,resid.3) harvests them all in one pass.")] = "resid",
    input_transform: Annotated[InputTransform, typer.Option(
        "--input-transform", help="none; center: subtract each position's mean over d_model, "
        "as TransformerLens's default weight processing (center_writing_weights) does; "
        "fold_value_biases (attn_z): subtract what its fold_value_biases moves out of hook_z.")] = InputTransform.none,
    corpus: Annotated[str, typer.Option(
        "--corpus", help="builtin, a .txt/.jsonl file or folder, or hf:NAME.")] = "builtin",
    tokens: Annotated[int, typer.Option(
        "--tokens", help="Tokens to store, train and eval together.")] = 1_000_000,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder for the activation store; with --layers or several hook points, the "
        "folder holding one store per hook point, named like resid.3 "
        "(default: data/activations/<model>-<hook>-<corpus>-<tokens>-<hash> each).")] = None,
    eval_fraction: Annotated[float, typer.Option(
        "--eval-fraction", help="Share of documents held out for eval fragments.")] = 0.1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per forward pass.")] = 32,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    dtype: Annotated[ModelDtype, typer.Option(
        "--dtype", help="Model dtype: auto (bf16 on CUDA and on CPUs with native bf16, else "
        "fp32), float32, bfloat16, float16.")] = ModelDtype.auto,
    store_dtype: Annotated[StoreDtype, typer.Option(
        "--store-dtype", help="Stored activation dtype.")] = StoreDtype.float16,
    random_init: Annotated[int | None, typer.Option(
        "--random-init", help="Re-initialise the model's weights with this seed (random-model control).")] = None,
    text_field: Annotated[str, typer.Option(
        "--text-field", help="Field holding the text in .jsonl and Hugging Face corpora.")] = "text",
    overwrite: OverwriteOpt = False,
) -> None:
    """Run the model over a corpus and store hook points' activations for every token.
    Under `torchrun --nproc_per_node N` each process harvests its own share of the documents."""
    from autointerp.distributed import current_world
    from autointerp.errors import BadInputError
    from autointerp.harvest.multihook import hook_points, parse_layers
    from autointerp.harvest.run import HarvestConfig, harvest_many

    if layer is not None and layers is not None:
        raise BadInputError("give --layer or --layers, not both")
    points = hook_points(hook, parse_layers(layers) if layers else [] if layer is None else [layer])
    nested = layers is not None or len(points) > 1  # --out holds one store per hook point
    cfgs = [HarvestConfig(
        layer=at, hook=kind, out=out / (kind if at is None else f"{kind}.{at}") if nested and out else out,
        model=model, corpus=corpus, n_tokens=tokens, eval_fraction=eval_fraction,
        batch_size=batch_size, seed=seed, device=device, dtype=dtype.value, store_dtype=store_dtype.value,
        random_init=random_init, text_field=text_field, overwrite=overwrite,
        input_transform=input_transform.value) for kind, at in points]
    paths = harvest_many(cfgs)
    if current_world().is_main:
        for path in paths:
            typer.echo(f"activation store: {path}")
