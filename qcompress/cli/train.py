"""`qcompress train`: train a model folder (qcompress.training).

The options are TrainConfig's fields: each field's metadata declares its help text and flags once, and the
command's signature is built from them (plus --json, the one option of the CLI's own). What Typer can check
before any work is added here: choices as Enums, ranges (`_RANGES`), a valid --device. The CLI has two
defaults of its own, both stated in --help: the variant QBEC when neither --variant nor --head is given (with
--loss distill: the quantum head on the frozen encoder, as recipes/default-head.sh trains it), and the output folder models/<variant or head>-<encoder name>[-N] when -o is not given.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import typing
from enum import Enum
from pathlib import Path
from typing import Callable, Optional

import typer

from qcompress.cli._common import command, fail, note, print_json, progress, usage_error
from qcompress.cli.options import HeadChoice, MixingChoice, SimilarityChoice, check_device
from qcompress.defaults import DEFAULT_ENCODER, POOLINGS
from qcompress.training.config import (
    CODE_LEVELS, FROZEN_PREFIX, LOSSES, PSEUDO_QUERIES, QUANTIZERS, VARIANTS, ArgumentError, TrainConfig,
)

DEFAULT_VARIANT = "QBEC"  # without --variant and --head: the paper's quantum head on the last 4 layers
MODELS_DIR = "models"

Variant = Enum("Variant", {name: name for name in VARIANTS}, type=str)
Optimizer = Enum("Optimizer", {"adam": "adam", "adamw": "adamw"}, type=str)
Pooling = Enum("Pooling", {name: name for name in POOLINGS}, type=str)
Loss = Enum("Loss", {name: name for name in LOSSES}, type=str)
PseudoQueries = Enum("PseudoQueries", {name: name for name in PSEUDO_QUERIES}, type=str)
FrozenPrefix = Enum("FrozenPrefix", {name: name for name in FROZEN_PREFIX}, type=str)
Quantizer = Enum("Quantizer", {name: name for name in QUANTIZERS}, type=str)
CodeLevels = Enum("CodeLevels", {name: name for name in CODE_LEVELS}, type=str)
# Field -> the Enum its value is one of (case-insensitive for the variants, as TrainConfig reads them).
_CHOICES = {"variant": (Variant, False), "head": (HeadChoice, True), "similarity": (SimilarityChoice, True),
            "optimizer": (Optimizer, True), "pooling": (Pooling, True), "mixing": (MixingChoice, True),
            "loss": (Loss, True), "pseudo_queries": (PseudoQueries, True), "frozen_prefix": (FrozenPrefix, True),
            "quantizer": (Quantizer, True), "code_levels": (CodeLevels, True)}
# Field -> the range Typer checks (TrainConfig's check_values refuses the same values for library callers), and
# the fields that must be above a bound (Typer has no open ranges: a callback checks them).
_RANGES = {
    "dim": dict(min=1), "train_layers": dict(min=0), "max_length": dict(min=1), "negatives": dict(min=0),
    "train_fraction": dict(max=1), "weight_decay": dict(min=0), "epochs": dict(min=1), "batch_size": dict(min=1),
    "max_steps": dict(min=1), "save_every": dict(min=1), "distill_columns": dict(min=0),
    "bits": dict(min=1, max=8), "code_warmup": dict(min=0),
}
_ABOVE = {"train_fraction": 0, "logit_scale": 0, "lr": 0, "head_lr": 0, "distill_temperature": 0}


def _above(bound: float) -> Callable[[Optional[float]], Optional[float]]:
    def check(number: Optional[float]) -> Optional[float]:
        if number is not None and not number > bound:
            raise typer.BadParameter(f"{number} is not above {bound}")
        return number

    return check
_HELP_ADDED = {
    "output": f" Default: `{MODELS_DIR}/<variant or head>-<encoder name>`, with -2, -3... when taken (printed on "
    "stderr at the start; with --resume, the last such folder with a checkpoint).",
    "variant": f" Default: {DEFAULT_VARIANT} when --head is not given either (not with --loss distill).",
    "head": f" (With neither --variant nor --head: {DEFAULT_VARIANT}'s, quantum; with --loss distill, quantum on the "
    "frozen encoder.)",
}


def _flags(field: dataclasses.Field) -> tuple[str, ...]:
    return field.metadata["flags"] or ("--" + field.name.replace("_", "-"),)


_FLAG = {f.name: next(d for d in _flags(f) if d.startswith("--")).split("/")[0]
         for f in dataclasses.fields(TrainConfig)}


def _option(field: dataclasses.Field, annotation: object) -> tuple[object, object]:
    """(typer.Option, annotation) of one TrainConfig field."""
    default = None if field.name == "output" or field.default is dataclasses.MISSING else field.default
    settings = dict(field.metadata["option"], **_RANGES.get(field.name, {}))
    if field.name in _CHOICES:
        choice, case_sensitive = _CHOICES[field.name]
        annotation = Optional[choice] if default is None else choice
        settings["case_sensitive"] = case_sensitive
        if not case_sensitive:  # Typer would show the choices lowercased
            settings["metavar"] = "<" + "|".join(c.value for c in choice) + ">"
    if field.name == "device":
        settings["callback"] = check_device
    if field.name in _ABOVE:
        settings["callback"] = _above(_ABOVE[field.name])
    help_text = field.metadata["help"] + _HELP_ADDED.get(field.name, "")
    return typer.Option(default, *_flags(field), help=help_text, **settings), annotation


def _options() -> list[inspect.Parameter]:
    """One keyword parameter per TrainConfig field, in field order, its typer.Option from the field's metadata."""
    types = typing.get_type_hints(TrainConfig)
    parameters = []
    for field in dataclasses.fields(TrainConfig):
        option, annotation = _option(field, types[field.name])
        parameters.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                            annotation=annotation))
    as_json = typer.Option(False, "--json", help="Print one JSON summary object on stdout at the end.")
    return [*parameters, inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=as_json,
                                           annotation=bool)]


def default_output(variant: Optional[str], head: Optional[str], encoder: Optional[str], resume: bool) -> str:
    """models/<variant or head>-<encoder name>: the first free one of NAME, NAME-2, NAME-3... (neither the folder
    nor its checkpoint folder exists), or with `resume` the last one that has a checkpoint folder.

    Example:
        >>> default_output("QBEC", None, "bert-base-uncased", resume=False)
        'models/qbec-bert-base-uncased'
    """
    from qcompress.training.checkpoint import checkpoint_dir

    encoder_name = Path((encoder or DEFAULT_ENCODER).rstrip("/")).name
    base = Path(MODELS_DIR) / f"{(variant or head or 'none').lower()}-{encoder_name}"
    n, last_interrupted = 1, None
    while True:
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        if not path.exists() and not checkpoint_dir(path).exists():
            break
        if checkpoint_dir(path).is_dir():
            last_interrupted = path
        n += 1
    if not resume:
        return str(path)
    if last_interrupted is None:
        usage_error(f"--resume without -o: no interrupted run under {base}[-N] (no {base}.ckpt/); name it with -o")
    return str(last_interrupted)


def train_command(*, as_json: bool, **arguments: object) -> None:
    """Train a model: an encoder, mean pooling and a head (none, linear or quantum), for retrieval.

    Each example is (query, a judged-relevant document, N hard negatives); the loss is cross-entropy over
    logit-scale x similarity, as the authors train (SPEC §5). Deterministic given --seed. Ctrl-C saves a
    checkpoint and exits 130; rerun with --resume. The output folder holds the model (qcompress.json with every
    resolved argument under "training", head.safetensors, encoder/), the same model as sentence-transformers
    modules, a model card (README.md), train_log.jsonl and train_curve.png.

    Examples:

        qcompress train --encoder bert-base-uncased          # QBEC on Cranfield -> models/qbec-bert-base-uncased
        qcompress train --variant QBFEC --encoder bert-base-uncased -o models/qbfec --dim 256
        qcompress train --head linear --dim 64 --train-layers 2 --dataset beir/scifact -o models/lin64
        qcompress train --loss distill --head quantum --dim 256 --bits 2 -o models/q256x2   # 64-byte codes
    """
    arguments = {k: (v.value if isinstance(v, Enum) else v) for k, v in arguments.items()}
    if arguments["variant"] is None and arguments["head"] is None:
        if arguments.get("loss") == "distill":  # label-free: the head alone (QBEC's 4 layers under a listwise loss
            arguments["head"] = "quantum"       # over 128 x 512 documents a step took 22 GB on Cranfield)
        else:
            arguments["variant"] = DEFAULT_VARIANT
    if arguments["output"] is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank must name the same folder
            usage_error("under torchrun, name the output folder with -o")
        arguments["output"] = default_output(arguments["variant"], arguments["head"], arguments["encoder"],
                                             bool(arguments["resume"]))
        note(f"{'resuming' if arguments['resume'] else 'writing'} {arguments['output']} (no -o given)")
    from qcompress.training import TrainingInterrupted, summary
    from qcompress.training.distributed import context

    try:
        folder = _train_with_progress(arguments)
    except ArgumentError as err:
        fail(err.render(lambda name: _FLAG.get(name, name)))
    except TrainingInterrupted as stop:
        where = f"checkpoint of step {stop.step} in {stop.checkpoint}" if stop.checkpoint else "no checkpoint yet"
        note(f"qcompress: interrupted; {where}; rerun the same command with --resume to continue")
        raise typer.Exit(130)
    if not context().is_main:  # under torchrun rank 0 reports (and wrote the folder)
        return
    result = summary(folder)
    if as_json:
        print_json(result)
    else:
        best = (f", best epoch {result['best_epoch']} (validation NDCG@10 {result['best_ndcg_cut_10']:.4f})"
                if result["best_epoch"] is not None else "")
        note(f"wrote {folder}: {result['steps']} steps, final loss {result['final_loss']:.4f}{best}")


def _train_with_progress(arguments: dict):
    """qcompress.training.train with a progress bar per stage on stderr (transient: an error stays one line)."""
    from qcompress.training import train

    with progress(transient=True) as bars:
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
command("train")(train_command)
