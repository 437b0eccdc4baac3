"""Options that several commands share, each declared once (name, type, default, help).

A command declares `batch_size: BatchSize = DEFAULT_BATCH_SIZE` and gets the same flag and help everywhere.
Typer checks ranges (`min=1`), so a value like `--batch-size 0` is a usage error (exit 2) before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from qcompress.batching import DEFAULT_BATCH_SIZE
from qcompress.cli._common import ENCODER_HELP

__all__ = ["DEFAULT_BATCH_SIZE", "ModelDir", "Encoder", "Head", "Similarity", "MaxLength", "BatchSize",
           "TrustRemoteCode", "CacheDir", "AsJson", "Revision"]

ModelDir = Annotated[Optional[str], typer.Option(
    "--model", help="A model folder written by `qcompress train`, or its Hugging Face Hub id (see --revision).")]
Revision = Annotated[Optional[str], typer.Option(
    "--revision",
    help="With a Hub id (--model, or --encoder): the branch, tag or commit to use. Default: main. Offline "
    "(HF_HUB_OFFLINE=1) it must be in the local Hugging Face cache.")]
Encoder = Annotated[Optional[str], typer.Option("--encoder", help=ENCODER_HELP)]
Head = Annotated[Optional[str], typer.Option(
    "--head", help="With --encoder: only 'none' (a head must be trained first: `qcompress train`, then --model).")]
Similarity = Annotated[Optional[str], typer.Option(
    "--similarity",
    help="With --encoder: 'cosine' (store and compare the pooled vectors; the paper's BT) or 'fidelity' (store the "
    "encoded qubit angles tanh(u)*pi/2+pi/2 and compare by fidelity; the paper's QBT). Default cosine.")]
MaxLength = Annotated[Optional[int], typer.Option(
    "--max-length", help="Tokens per text (longer texts are truncated). Default: the model's (256).")]
BatchSize = Annotated[int, typer.Option(
    "--batch-size", help="Texts per encoder batch (batches go longest-first).")]
TrustRemoteCode = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow code shipped with the encoder (it runs on this machine).")]
CacheDir = Annotated[Optional[Path], typer.Option(
    "--cache", envvar="QCOMPRESS_CACHE",
    help="Folder caching pooled encoder outputs per (encoder weights, max length, text), shared by compress, "
    "evaluate and train: texts already there skip the encoder. Default: $QCOMPRESS_CACHE, else no cache.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]
