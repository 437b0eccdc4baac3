"""Lazy re-exports for package `__init__` files (PEP 562), so that `import qcompress.cli` stays light.

A package lists which submodule defines each public name; the submodule is imported when a name is first asked
for (`from qcompress.training import train`, `qcompress.training.train`), and never before. So `qcompress --help`
does not pay for torch, transformers, scipy or pyarrow, while every public import path keeps working.

Example:
    >>> getattr_, dir_ = attach("qcompress.formats", {"read_run": "trec"})
    >>> getattr_("read_run").__name__, "read_run" in dir_()
    ('read_run', True)
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Mapping

__all__ = ["attach"]


def attach(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """(`__getattr__`, `__dir__`) for `package`, whose public name N lives in submodule `exports[N]` (relative to
    the package, or absolute when it starts with "qcompress."). A name that is not listed but is a submodule
    (`qcompress.search`) is imported as one, as if an eager `__init__` had imported it."""

    def __getattr__(name: str) -> object:
        where = exports.get(name)
        if where is None:
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as err:
                if err.name != f"{package}.{name}":  # the submodule exists but one of its imports is missing
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module = importlib.import_module(where if where.startswith("qcompress.") else f"{package}.{where}")
        value = getattr(module, name)
        setattr(sys.modules[package], name, value)  # the next lookup is an ordinary attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
