"""The two kinds of error a user can fix: bad input (a file, a line, a field, an argument) and a missing optional
package. The CLI prints either as one line; anything else is a bug in qcompress (qcompress.cli._common.cli_errors)."""

from __future__ import annotations

import importlib
import json
import re
import sys
from os import PathLike
from types import ModuleType
from typing import Any

from qcompress._version import DISTRIBUTION


class InputError(ValueError):
    """Bad input from a user's file or arguments: the CLI prints it as one line and exits non-zero.

    Example:
        >>> str(InputError("text is empty", file="corpus.jsonl", line=3, field="text"))
        'corpus.jsonl:3: field "text": text is empty'
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | PathLike | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        elif line is not None:
            where = f"line {line}: "
        if field is not None:
            where += f'field "{field}": '
        super().__init__(where + message)


class MissingDependency(ImportError):
    """A package that one feature needs is not installed: `install` is the pip command that adds it.

    An ImportError, not an InputError: the input is fine (the same command works once the package is there), and
    `except ImportError` is how Python code falls back when an optional package is absent.

    Example:
        >>> err = MissingDependency("ray", "--engine ray", extra="ray")
        >>> str(err)
        "--engine ray needs ray, which is not installed: pip install 'qcompress-embeddings[ray]'"
        >>> MissingDependency("faiss-cpu", "the approximate index", module="faiss").install
        'pip install faiss-cpu'
    """

    def __init__(self, package: str, needed_for: str, *, extra: str | None = None, module: str | None = None) -> None:
        self.package, self.extra, self.needed_for = package, extra, needed_for
        if extra is not None:
            self.install = f"pip install '{DISTRIBUTION}[{extra}]'"
        else:  # a requirement such as "tomli>=2" needs quotes in a shell, a plain name does not
            self.install = f"pip install {package}" if re.fullmatch(r"[\w.-]+", package) else f"pip install '{package}'"
        super().__init__(f"{needed_for} needs {package}, which is not installed: {self.install}",
                         name=module or package)


def require(module: str, needed_for: str, *, package: str | None = None, extra: str | None = None) -> ModuleType:
    """Import and return `module`, or raise MissingDependency naming `package` (default: the module's name) and the
    qcompress `extra` that installs it.

    Example:
        >>> require("json", "reading runs").__name__
        'json'
        >>> require("no_such_module_here", "this example", package="no-such-package")
        Traceback (most recent call last):
        ...
        qcompress.errors.MissingDependency: this example needs no-such-package, which is not installed: pip install no-such-package
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if err.name is not None and module != err.name and not module.startswith(err.name + "."):
            raise  # the package is there but one of its own imports failed: not ours to explain
        raise MissingDependency(package or module, needed_for, extra=extra, module=module) from None


def json_loads(text: str | bytes) -> Any:
    """`json.loads`, except that JSON nested too deeply for Python's parser (a RecursionError, a bug-like
    traceback) or an integer too long for it (a ValueError) is the `json.JSONDecodeError` that every reader of a
    user's JSON already turns into one line.

    Example:
        >>> json_loads('{"a": [1]}')
        {'a': [1]}
        >>> json_loads("[" * 100_000 + "]" * 100_000)
        Traceback (most recent call last):
        ...
        json.decoder.JSONDecodeError: nested too deeply (more than Python's parser follows): line 1 column 1 (char 0)
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError) as err:  # ValueError: an integer past Python's conversion limit
        doc = text if isinstance(text, str) else text.decode("utf-8", "replace")
        why = "nested too deeply (more than Python's parser follows)" if isinstance(err, RecursionError) else \
            f"a number with more than {sys.get_int_max_str_digits():,} digits, more than Python converts"
        raise json.JSONDecodeError(why, doc, 0) from None
