"""What every command shares: the Typer app, the two consoles, one-line errors, model options, progress bars.

Exit codes: 0 success, 1 bad input or a failed job (one line on stderr), 2 wrong usage, 130 interrupted.
Progress and messages go to stderr; stdout carries only results (tables, --json, runs, scores).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from typing import TYPE_CHECKING, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from qcompress.model import ModelSpec

app = typer.Typer(
    help="Compress text embeddings with a quantum-inspired projection head and compare them by fidelity "
    "(arXiv 2501.04591).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # reflow docstring paragraphs to the terminal; indented examples stay verbatim
)
stdout = Console()
stderr = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """Print one line `qcompress: error: ...` on stderr and exit."""
    stderr.print(f"qcompress: error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cli_errors(func: Callable) -> Callable:
    """Turn bad-input exceptions into one clear line and a non-zero exit; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            stderr.print("qcompress: interrupted", highlight=False)
            raise typer.Exit(130)
        except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError) as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            fail(message)

    return wrapper


def _version(value: bool) -> None:
    if value:
        from qcompress._version import __version__

        print(f"qcompress {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Compress text embeddings with a quantum-inspired head and compare them by fidelity (arXiv 2501.04591).

    Typical use: qcompress train --variant QBEC --output m/ ; qcompress compress corpus.jsonl --model m/ -o c.parquet ;
    qcompress evaluate --model m/ --dataset cranfield
    """


@contextlib.contextmanager
def quiet_closed_pipe():
    """Exit quietly with status 141 (a process killed by SIGPIPE, as Unix tools are) when the reader of stdout
    goes away, as in `qcompress score ... | head`: no traceback, no message."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        try:  # Python's exit-time flush of stdout would fail again and print a warning
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        raise typer.Exit(141) from None


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=None, sort_keys=False) + "\n")
    sys.stdout.flush()


# -- shared by compress, score and evaluate: model options, model loading, progress bars on stderr --------------

ENCODER_HELP = (
    "Instead of --model: an encoder without a trained head (hub id, local folder, or 'minilm' for the offline "
    "all-MiniLM-L6-v2), pooled, normalised and prompted as its sentence-transformers configuration says (else "
    "mean pooling). With --model: the encoder to use instead of the folder's own."
)


def model_spec(
    model_dir: Optional[str],
    encoder: Optional[str],
    head: Optional[str],
    similarity: Optional[str],
    max_length: Optional[int],
    trust_remote_code: bool,
    revision: Optional[str] = None,
) -> "ModelSpec":
    """The model named by --model DIR (or Hub id; --encoder replaces its encoder), or by --encoder NAME --head none
    --similarity S (checked, not loaded)."""
    from qcompress.model import ModelSpec

    if model_dir is not None and (head is not None or similarity is not None):
        raise ValueError("--model DIR already names its head and similarity; drop --head/--similarity")
    if encoder is None and (head is not None or similarity is not None):
        raise ValueError("--head and --similarity go with --encoder NAME (a --model folder names its own)")
    if model_dir is None and encoder is None:
        raise ValueError("name a model: --model DIR (from `qcompress train`) or --encoder NAME --head none")
    if head not in (None, "none"):
        raise ValueError(
            f"--encoder with --head {head} would use an untrained, random head; train it with `qcompress train` "
            "and pass --model DIR, or use --head none"
        )
    if max_length is not None and max_length <= 0:
        raise ValueError(f"--max-length must be positive, got {max_length}")
    return ModelSpec(model_dir=model_dir, encoder=encoder, similarity=similarity, max_length=max_length,
                     trust_remote_code=trust_remote_code, revision=revision)


def load_cli_model(
    model_dir: Optional[str],
    encoder: Optional[str],
    head: Optional[str],
    similarity: Optional[str],
    max_length: Optional[int],
    trust_remote_code: bool,
    revision: Optional[str] = None,
):
    """The model named by the model options, loaded."""
    return model_spec(model_dir, encoder, head, similarity, max_length, trust_remote_code, revision).load()


def check_model_options(encoder: Optional[str], head: Optional[str], similarity: Optional[str]) -> None:
    if encoder is None and (head is not None or similarity is not None):
        raise ValueError("--head and --similarity go with --encoder NAME (a --model folder names its own)")


@contextlib.contextmanager
def progress_bars():
    """Yield `start(description, total) -> advance(n)`: one rich progress bar per stage, on stderr.

    The display starts with the first bar, so a command that fails before any leaves stderr to its one-line error.
    """
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    progress = None

    def start(description: str, total: int) -> Callable[[int], None]:
        nonlocal progress
        if progress is None:
            progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), console=stderr, transient=False,
            )
            progress.start()
        task = progress.add_task(description, total=total)
        return lambda n: progress.advance(task, n)

    try:
        yield start
    finally:
        if progress is not None:
            progress.stop()


def bar_on_first_use(start: Callable[[str, int], Callable[[int], None]], description: str,
                     total: Optional[int]) -> Callable[[int], None]:
    """A progress callback whose bar appears with the first rows done: an error before any (an output locked by
    another run, a resume refused, a bad argument) is then the only line on stderr."""
    advance = None

    def on_rows(n: int) -> None:
        nonlocal advance
        if advance is None:
            advance = start(description, total)
        advance(n)

    return on_rows


def print_table(table: Table) -> None:
    """Print a results table whole: piped or redirected, as wide as it needs (rich would cut numbers at 80
    columns); on a terminal, at the terminal's width."""
    from rich.measure import Measurement

    if stdout.is_terminal:
        stdout.print(table)
        return
    needed = Measurement.get(stdout, stdout.options.update(max_width=10_000), table).maximum
    Console(width=max(needed, stdout.width)).print(table)  # a console's width caps print(width=...)
