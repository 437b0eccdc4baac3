"""`qcompress train`: train a model folder (qcompress.training).

The options are TrainConfig's fields: each field's metadata declares its help text and flags once, and the
command's signature is built from them (plus --json, the one option of the CLI's own).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Callable

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from qcompress.cli._common import app, cli_errors, fail, print_json, stderr
from qcompress.training import ArgumentError, TrainConfig, TrainingInterrupted, summary, train
from qcompress.training.distributed import context


def _flags(field: dataclasses.Field) -> tuple[str, ...]:
    return field.metadata["flags"] or ("--" + field.name.replace("_", "-"),)


_FLAG = {f.name: next(d for d in _flags(f) if d.startswith("--")).split("/")[0] for f in dataclasses.fields(TrainConfig)}


def _options() -> list[inspect.Parameter]:
    """One keyword parameter per TrainConfig field, in field order, its typer.Option from the field's metadata."""
    types = typing.get_type_hints(TrainConfig)
    parameters = []
    for field in dataclasses.fields(TrainConfig):
        default = ... if field.default is dataclasses.MISSING else field.default
        option = typer.Option(default, *_flags(field), help=field.metadata["help"], **field.metadata["option"])
        parameters.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                            annotation=types[field.name]))
    as_json = typer.Option(False, "--json", help="Print one JSON summary object on stdout at the end.")
    return [*parameters, inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=as_json,
                                           annotation=bool)]


def train_command(*, as_json: bool, **arguments: object) -> None:
    """Train a model: an encoder, mean pooling and a head (none, linear or quantum), for retrieval.

    Each example is (query, a judged-relevant document, N hard negatives); the loss is cross-entropy over
    logit-scale x similarity, as the authors train (SPEC §5). Deterministic given --seed. Ctrl-C saves a
    checkpoint and exits 130; rerun with --resume. The output folder holds the model (qcompress.json with every
    resolved argument under "training", head.safetensors, encoder/), the same model as sentence-transformers
    modules, a model card (README.md), train_log.jsonl and train_curve.png.

    Examples:

        qcompress train --variant QBEC -o models/qbec --eval-split test --epochs 5
        qcompress train --variant QBFEC --encoder bert-base-uncased -o models/qbfec --dim 256
        qcompress train --head linear --dim 64 --train-layers 2 --dataset beir/scifact -o models/lin64
    """
    try:
        folder = _train_with_progress(arguments)
    except ArgumentError as err:
        fail(err.render(lambda name: _FLAG.get(name, name)))
    except TrainingInterrupted as stop:
        where = f"checkpoint of step {stop.step} in {stop.checkpoint}" if stop.checkpoint else "no checkpoint yet"
        stderr.print(f"qcompress: interrupted; {where}; rerun the same command with --resume to continue",
                     highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(130)
    if not context().is_main:  # under torchrun rank 0 reports (and wrote the folder)
        return
    result = summary(folder)
    if as_json:
        print_json(result)
    else:
        best = (f", best epoch {result['best_epoch']} (validation NDCG@10 {result['best_ndcg_cut_10']:.4f})"
                if result["best_epoch"] is not None else "")
        stderr.print(f"wrote {folder}: {result['steps']} steps, final loss {result['final_loss']:.4f}{best}",
                     highlight=False, markup=False, soft_wrap=True)


def _train_with_progress(arguments: dict):
    """qcompress.training.train with a progress bar per stage on stderr (transient: an error stays one line)."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=stderr, transient=True,
    ) as bars:
        tasks: dict[str, object] = {}

        def start(description: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(description, total=total)
            tasks[description] = task
            return lambda n: bars.advance(task, n)

        def on_row(row: dict) -> None:
            if row["kind"] == "step" and "training" in tasks:
                bars.update(tasks["training"], description=f"training, loss {row['loss']:.4f}")
            elif row["kind"] == "validation":
                bars.console.print(f"epoch {row['epoch']}: validation NDCG@10 {row['ndcg_cut_10']:.4f} "
                                   f"({row['split']}, {row['protocol']})", highlight=False, markup=False)

        return train(arguments, progress=start, callback=on_row)


train_command.__signature__ = inspect.Signature(_options(), return_annotation=None)
app.command("train")(cli_errors(train_command))
