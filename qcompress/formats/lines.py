"""Numbered lines of a text file or of stdin, for the line-based readers (texts, pairs, TREC runs and qrels).

A file that cannot be read raises `InputError` at once; bad UTF-8 raises it naming the line, so that the CLI prints
`file:line: ...` and exits 1.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "two.txt"
    >>> _ = p.write_bytes(b"\\xef\\xbb\\xbffirst\\r\\nsecond\\n")
    >>> list(open_lines(p))
    [(1, 'first'), (2, 'second')]
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import IO, Iterator

from qcompress.errors import InputError

PathLike = str | os.PathLike
STDIN = "-"  # the path that means standard input (or standard output for writers)
STDIN_NAME = "<stdin>"
WHITESPACE = re.compile(r"\s")


def display_name(path: PathLike) -> str:
    """How error messages name `path`: the path itself, or `<stdin>` for "-"."""
    return STDIN_NAME if str(path) == STDIN else str(path)


def count_lines(path: PathLike) -> int | None:
    """The number of lines of a file (a fast pass over its bytes, for progress bars); None for stdin.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "three.txt"
        >>> _ = p.write_bytes(b"a\\nb\\nc")
        >>> count_lines(p)
        3
    """
    if str(path) == STDIN:
        return None
    count, last = 0, b"\n"
    try:
        with open(path, "rb") as stream:
            while block := stream.read(1 << 20):
                count += block.count(b"\n")
                last = block[-1:]
    except OSError:
        return None  # reading the file itself will say what is wrong
    return count + (last != b"\n")


def open_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Open `path` (or stdin for "-") now, so a missing file fails at once; return its numbered lines lazily.

    Lines are 1-based, without their line ending; a UTF-8 byte-order mark at the start is dropped.
    """
    if str(path) == STDIN:
        # Bytes where possible, so that bad UTF-8 is reported on its own line (text streams decode in chunks).
        stream = getattr(sys.stdin, "buffer", sys.stdin)
        return _numbered(stream, STDIN_NAME, close=False)
    p = Path(path)
    if p.is_dir():
        raise InputError("is a folder; expected a file", file=p)
    try:
        stream = open(p, "rb")
    except FileNotFoundError:
        raise InputError("file not found; check the path", file=p) from None
    except OSError as err:
        raise InputError(f"cannot open file: {err.strerror}", file=p) from None
    return _numbered(stream, str(p), close=True)


def _numbered(stream: IO, name: str, *, close: bool) -> Iterator[tuple[int, str]]:
    try:
        for lineno, raw in enumerate(stream, 1):
            if isinstance(raw, bytes):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise InputError(
                        f"not valid UTF-8 text ({err.reason} at byte {err.start + 1} of the line); "
                        "save the file as UTF-8",
                        file=name,
                        line=lineno,
                    ) from None
            else:
                line = raw
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # byte-order mark of some Windows editors: not data
            yield lineno, line.rstrip("\r\n")
    finally:
        if close:
            stream.close()
