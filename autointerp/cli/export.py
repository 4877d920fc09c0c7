"""`autointerp export neuronpedia|saebench`: a scored run in the files other tools read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from autointerp.cli import app
from autointerp.cli.options import DEFAULT_DB, DbOpt
from autointerp.errors import BadInputError

export_app = typer.Typer(help="Write a scored run for Neuronpedia's upload or as an SAEBench "
                              "eval output.", no_args_is_help=True)
app.add_typer(export_app, name="export")

RunOpt = Annotated[str, typer.Option("--run", help="The run to export: its id, or the start of it (table.csv of `autointerp compare` lists them, and an unknown --run lists the database's runs).")]
OutDirOpt = Annotated[Path, typer.Option("--out", help="Folder to write the batches, scores.jsonl and manifest.json into (replaced if it holds an earlier export).")]
OutFileOpt = Annotated[Path, typer.Option("--out", help="The JSON file to write.")]
ModelIdOpt = Annotated[str | None, typer.Option("--model-id", help="Neuronpedia model id; default: the dictionary's Neuronpedia id, else its model's name.")]
SourceOpt = Annotated[str | None, typer.Option("--source", help="Neuronpedia source (LAYER-SETNAME, e.g. 3-autointerp-topk); default: the dictionary's Neuronpedia id, else derived from its layer and method.")]
MethodOpt = Annotated[str | None, typer.Option("--method-name", help="Explanation method name Neuronpedia knows; default: oai_token-act-pair for LLM explanations (Bills et al.'s prompt).")]
ExplModelOpt = Annotated[str | None, typer.Option("--explainer-model-name", help="Explanation model name Neuronpedia knows; default: the explainer's model.")]
LogitsOpt = Annotated[bool, typer.Option("--logits/--no-logits", help="Include the 20 tokens each decoder direction promotes and suppresses (loads the subject model).")]


def _db(path: Path):
    from autointerp.db import open_db

    if not Path(path).is_file():
        raise BadInputError(f"database {path} does not exist")
    return open_db(path)


@export_app.command("neuronpedia")
def neuronpedia(run: RunOpt, out: OutDirOpt, db: DbOpt = DEFAULT_DB,
                model_id: ModelIdOpt = None, source: SourceOpt = None,
                method_name: MethodOpt = None, explainer_model_name: ExplModelOpt = None,
                logits: LogitsOpt = True) -> None:
    """Batches for the neuronpedia client's upload_batch (<= 128 features each), validated
    against its limits, and our scores in Neuronpedia's score-row shape beside them."""
    from autointerp.results.neuronpedia import export_neuronpedia

    e = export_neuronpedia(_db(db), run, out, model_id, source, method_name,
                           explainer_model_name, logits)
    Console().print(
        f"{e.out}: {e.n_features} features in {e.n_batches} batches for {e.target.id} "
        f"({'its Neuronpedia id' if e.target.known else 'a new source set'}); scores.jsonl; "
        f"logits {e.logits}; {e.n_failed} failed features left out; "
        f"{e.n_cut} explanations cut to 512 characters", markup=False, highlight=False)


@export_app.command("saebench")
def saebench(run: RunOpt, out: OutFileOpt, db: DbOpt = DEFAULT_DB) -> None:
    """A detection run as an SAEBench autointerp eval output, with a chance-corrected score."""
    from autointerp.results.saebench import export_saebench

    e = export_saebench(_db(db), run, out)
    Console().print(f"{e.out}: {e.n_features} latents, autointerp_score {e.score:.3f} "
                    f"(chance-corrected {e.chance_corrected:.3f})", markup=False, highlight=False)
