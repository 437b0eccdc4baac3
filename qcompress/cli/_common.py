"""What every command shares: the Typer app, the two consoles, one-line errors, model options, progress bars.

Exit codes: 0 success, 1 bad input, a missing package or a failed job (one line on stderr; an internal error, a bug
in qcompress, says so and shows its traceback with --debug), 2 wrong usage (the same one-line style:
an unknown option, a value out of range or not among the choices, options that do not go together), 130
interrupted. Progress and messages go to stderr; stdout carries only results (tables, --json, runs, scores).

Nothing here imports torch, transformers, pyarrow or scipy: `qcompress --help` must stay quick, so each command
imports the library inside its function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NoReturn, Optional

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from qcompress.errors import InputError, MissingDependency

if TYPE_CHECKING:
    from rich.table import Table

    from qcompress.model import ModelSpec

# click's exception classes, from the click that Typer uses (recent Typer versions vendor their own copy).
_CLICK_ERRORS = sys.modules[typer.BadParameter.__module__]
UsageError = _CLICK_ERRORS.UsageError
ClickException = _CLICK_ERRORS.ClickException


def _quiet_flags(params: list, ctx=None) -> list:
    # A flag takes no value: its help row should not show a type such as <bool> (recent Typer versions do).
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        # An argument taking several values shows each value's type (<path>), not Python's <list[Path]>.
        shown = param.display_type_rich(ctx) if ctx is not None and hasattr(param, "display_type_rich") else None
        element = re.fullmatch(r"<list\[(\w+)\]>", shown or "")
        if element:
            param.display_type_rich = lambda ctx, label=f"<{element[1].lower()}>": label
    return params


class Command(TyperCommand):
    """A qcompress command: flags show no value type in --help; usage names arguments as Unix tools do
    (`INPUT`, `[QUERIES]`, `RECIPE...`), without the braces recent Typer versions put around required ones."""

    def get_params(self, ctx):
        return _quiet_flags(super().get_params(ctx), ctx)

    def collect_usage_pieces(self, ctx):
        return [re.sub(r"^\{(.*)\}", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]


class Group(TyperGroup):
    """The `qcompress` group: usage errors in the one-line style of every other error, exit 2."""

    def get_params(self, ctx):
        return _quiet_flags(super().get_params(ctx))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _stand_in_for_closed_streams()
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # `qcompress` alone: the help is already printed
                sys.exit(err.exit_code)
            _print_error(_usage_message(err) if isinstance(err, UsageError) else err.format_message())
            sys.exit(2 if isinstance(err, UsageError) else err.exit_code)
        except typer.Abort:
            _print_error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


class _ClosedStream(io.TextIOBase):
    """Stands for stdin or stdout when qcompress started with it closed (Python then sets it to None): reading or
    writing it is an `InputError`, one line, instead of an AttributeError on None."""

    def __init__(self, name: str, why: str) -> None:
        self.stream_name, self.why = name, why

    def _closed(self, *args, **kwargs):
        raise InputError(f"is closed: {self.why}", file=f"<{self.stream_name}>") if self.stream_name == "stdin" else \
            InputError(f"{self.stream_name} is closed: {self.why}")

    read = readline = write = fileno = __iter__ = _closed

    def flush(self) -> None:
        pass

    @property
    def buffer(self):
        return self


def _stand_in_for_closed_streams() -> None:
    if sys.stdin is None:
        sys.stdin = _ClosedStream("stdin", "nothing to read (give a file, or pipe the input in)")
    if sys.stdout is None:
        sys.stdout = _ClosedStream("stdout", "nowhere to write the results (give -o FILE, or leave stdout open)")


def _usage_message(err) -> str:
    message = err.format_message().strip().rstrip(".").replace("Value error, ", "")  # Typer's validation prefix
    message = message[:1].lower() + message[1:]  # "Invalid value for ..." reads as our "invalid value for ..."
    ctx = getattr(err, "ctx", None)
    return f"{message} (see '{ctx.command_path} --help')" if ctx is not None else message


app = typer.Typer(
    cls=Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # reflow docstring paragraphs to the terminal; indented examples stay verbatim
)
stdout = Console()
stderr = Console(stderr=True)


def command(name: str, group: typer.Typer | None = None) -> Callable[[Callable], Callable]:
    """Register a command function under `name` (in a command `group`, default the app), with one-line errors
    (`cli_errors`)."""

    def register(func: Callable) -> Callable:
        (group or app).command(name, cls=Command)(cli_errors(func))
        return func

    return register


def command_group(name: str, help: str) -> typer.Typer:
    """A group of commands, `qcompress NAME SUBCOMMAND` (`index build`, `meta copy`); `command(..., group)` adds
    its commands."""
    group = typer.Typer(cls=Group, help=help, no_args_is_help=True, rich_markup_mode="markdown")
    app.add_typer(group, name=name)
    return group


def _print_error(message: str) -> None:
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate quoted from input
    stderr.print(f"qcompress: error: {message}", markup=False, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line `qcompress: error: ...` on stderr and exit."""
    _print_error(message)
    raise typer.Exit(code)


def usage_error(message: str) -> NoReturn:
    """Wrong usage found by a command itself (options that do not go together): one line, exit 2."""
    raise UsageError(message)


def check_writable(path: Path, flag: str) -> None:
    """Fail now, before any model loads, when the output `path` (named by `flag`) cannot be written: it is a folder,
    a socket or a block device, or its folder (or the nearest one that exists, where the rest will be created) is a
    file or not writable. A pipe or a character device (/dev/null) is fine: it is written through
    (`qcompress.atomic.written_through`)."""
    from qcompress.atomic import written_through

    try:
        if written_through(path):
            return
    except InputError as err:
        fail(f"{flag} {err}")
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        fail(f"{flag} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        fail(f"{flag} {path}: cannot write in {folder} (permission denied)")


def check_output_file(path: Path, flag: str, example: str, force: bool) -> None:
    """`check_writable` for a command that replaces an existing file only with --force: a folder is refused (with a
    file path in it as `example`), and so is an existing file without `force`. A pipe or a character device needs
    no --force: it is written through, never replaced."""
    if path.is_dir():
        usage_error(f"{flag} {path}: is a folder; give a file path such as {path / example}")
    check_writable(path, flag)
    from qcompress.atomic import written_through

    if path.exists() and not force and not written_through(path):
        usage_error(f"{path} exists; pass --force to replace it, or {flag} to write elsewhere")


def note(message: str) -> None:
    """One line on stderr that a user should read (what was chosen for them, what was left out)."""
    stderr.print(message, markup=False, highlight=False, soft_wrap=True)


# With InputError: the user's to fix (ConnectionError: no network, or offline mode, where a command needs the Hub).
_USER_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError, ConnectionError)
# The machine's limits, not bugs in qcompress: a full disk, a file-size limit, a disk quota, a read-only file system.
_MACHINE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)


def _machine_limit(err: BaseException) -> str | None:
    """What stopped a write, in a few words, when `err` (or an exception that led to it) is one of the machine's
    limits (`_MACHINE_ERRNOS`); None otherwise. Libraries that write with their own code (safetensors, pyarrow)
    may report these in their own exception types, so their messages are read too."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _MACHINE_ERRNOS:
            return os.strerror(seen.errno) + (f" ({seen.filename})" if seen.filename else "")
        for code in _MACHINE_ERRNOS:
            if os.strerror(code) in str(seen):
                return os.strerror(code)
        seen = seen.__cause__ or seen.__context__
    return None


def _drop_stdout_if_failing() -> None:
    """When stdout cannot take what is pending (a full device), point it at /dev/null, so that Python's own flush at
    exit does not fail again with a message of its own."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError, InputError):
        with contextlib.suppress(OSError, ValueError, InputError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


_debug = False  # --debug or $QCOMPRESS_DEBUG: an internal error shows its traceback (set by `main` on every run)


def cli_errors(func: Callable) -> Callable:
    """Bad input (InputError, a missing or unwritable file) and a missing package become one line `qcompress:
    error: ...` and exit 1; Ctrl-C exit 130. Any other exception is a bug in qcompress, not the user's: one line
    `qcompress: internal error: ...` asking for a report, and exit 1 (with --debug, its traceback too)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, ClickException):  # exit codes and usage errors: Group.main prints them
            raise
        except KeyboardInterrupt:
            stderr.print("qcompress: interrupted", highlight=False)
            raise typer.Exit(130)
        except (InputError, MissingDependency, *_USER_ERRORS) as err:
            fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
        except Exception as err:
            limit = _machine_limit(err)
            if limit is not None:  # files are written atomically: nothing incomplete is left at their final paths
                _drop_stdout_if_failing()
                fail(f"cannot write the output: {limit}; free some space (or raise the limit) and run again")
            if _debug:
                import traceback

                traceback.print_exc()  # on sys.stderr, as Python prints it
            message = str(err).splitlines()[0] if str(err) else ""
            stderr.print(f"qcompress: internal error: {type(err).__name__}: {message} (please report it; run with "
                         "--debug for the traceback)", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1)

    return wrapper


def _version(value: bool) -> None:
    if value:
        from qcompress._version import __version__

        print(f"qcompress {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", envvar="QCOMPRESS_DEBUG", show_envvar=False,
                               help="Show the traceback of an internal error (a bug in qcompress). Also "
                               "$QCOMPRESS_DEBUG=1."),
) -> None:
    """Compress text embeddings with a quantum-inspired head and compare them by fidelity (arXiv 2501.04591).

    Start here: these need no other flags (the default model, the bundled Cranfield collection), and every
    command's --help lists its options and examples.

        qcompress compress corpus.jsonl              # -> corpus.parquet
        qcompress evaluate --trec 2019               # TREC DL 2019: $QCOMPRESS_TREC_DIR, else ir_datasets
        qcompress train --encoder bert-base-uncased  # -> models/qbec-bert-base-uncased
    """
    global _debug
    _debug = debug


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


# -- shared by compress, score and evaluate: the model, the cache, progress bars on stderr -----------------------


def model_spec(
    model_dir: Optional[str],
    encoder: Optional[str],
    head: Optional[str],
    similarity: Optional[str],
    max_length: Optional[int],
    trust_remote_code: bool,
    revision: Optional[str] = None,
    *,
    backend: str = "torch",
    export_dir: Optional[str] = None,
) -> "ModelSpec":
    """The model named by --model DIR (or Hub id; --encoder replaces its encoder), or by --encoder NAME --head none
    --similarity S, else the default model (qcompress.model.default_model_spec, announced on stderr), its encoder
    run by --backend (exports kept in `export_dir`, None: the cache folder). Checked, not loaded: a backend whose
    extra is missing is refused here, before any input is read."""
    from qcompress.model import ModelSpec, default_model_spec

    if backend != "torch":
        from qcompress.backends import require_backend

        require_backend(backend)

    if model_dir is not None and (head is not None or similarity is not None):
        usage_error("--model DIR already names its head and similarity; drop --head/--similarity")
    if encoder is None and (head is not None or similarity is not None):
        usage_error("--head and --similarity go with --encoder NAME (a --model folder names its own)")
    if head not in (None, "none"):
        usage_error(f"--encoder with --head {head} would use an untrained, random head; train it with "
                    "`qcompress train` and pass --model DIR, or use --head none")
    if model_dir is None and encoder is None:
        spec = default_model_spec()
        note(f"note: no --model or --encoder given: using the default model, {describe_default(spec)}")
        return dataclasses.replace(spec, max_length=max_length, trust_remote_code=trust_remote_code, backend=backend,
                                   export_dir=export_dir)
    return ModelSpec(model_dir=model_dir, encoder=encoder, similarity=similarity, max_length=max_length,
                     trust_remote_code=trust_remote_code, revision=revision, backend=backend, export_dir=export_dir)


def describe_default(spec: "ModelSpec") -> str:
    """What the default model is, in words."""
    if spec.model_dir is not None:
        return f"the trained model shipped with qcompress ({spec.model_dir})"
    return (f"{spec.encoder} without a head, compared by {spec.similarity} of its angles (the paper's QBT: this "
            "installation lacks the trained default model, qcompress/default_model/)")


def check_model_options(encoder: Optional[str], head: Optional[str], similarity: Optional[str]) -> None:
    if encoder is None and (head is not None or similarity is not None):
        usage_error("--head and --similarity go with --encoder NAME (a --model folder names its own)")


def cache_folder(cache_dir: Optional[str], legacy: Optional[str], no_cache: bool) -> Optional[str]:
    """The pooled-output cache folder of --cache-dir (or the old --cache, or $QCOMPRESS_CACHE), else the user's
    cache folder (qcompress.cache.resolve_cache_dir); None with --no-cache."""
    if no_cache:
        return None
    from qcompress.cache import resolve_cache_dir

    chosen = legacy if legacy is not None else cache_dir  # a flag typed beats $QCOMPRESS_CACHE
    return str(resolve_cache_dir(chosen if chosen is not None and chosen.strip() else None))


@contextlib.contextmanager
def progress(transient: bool = False):
    """Yield a rich Progress on stderr whose display starts with its first bar, so that an error before any work
    stays one line (an empty display would still print a line)."""
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    class LazyProgress(Progress):
        def add_task(self, *args, **kwargs):
            if not self.live.is_started:
                self.start()
            return super().add_task(*args, **kwargs)

    bars = LazyProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=stderr, transient=transient)
    try:
        yield bars
    finally:
        if bars.live.is_started:
            bars.stop()


@contextlib.contextmanager
def progress_bars():
    """Yield `start(description, total) -> advance(n)`: one rich progress bar per stage, on stderr.

    The display starts with the first bar, so a command that fails before any leaves stderr to its one-line error.
    """
    with progress() as bars:

        def start(description: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(description, total=total)
            return lambda n: bars.advance(task, n)

        yield start


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


def codes_note(rows: int, codec, levels_source: str, output: Path, extra: str = "") -> None:
    """The line that says what a file of low-bit codes holds (compress --bits, quantize)."""
    note(f"wrote {rows:,} rows of {codec.dim} qubits as {codec.bits}-bit codes ({codec.bytes_per_vector:,} bytes a "
         f"row; levels {levels_source}) to {output}{extra}")


def print_table(table: "Table") -> None:
    """Print a results table whole: piped or redirected, as wide as it needs (rich would cut numbers at 80
    columns); on a terminal, at the terminal's width."""
    from rich.measure import Measurement

    if stdout.is_terminal:
        stdout.print(table)
        return
    needed = Measurement.get(stdout, stdout.options.update(max_width=10_000), table).maximum
    Console(width=max(needed, stdout.width)).print(table)  # a console's width caps print(width=...)
