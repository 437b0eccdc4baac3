"""The `qcompress` command line: one module per command, each a thin layer over the library (options -> one
library call -> rendering). Its --help text is the documentation."""

from qcompress.cli._common import app
from qcompress.cli import compress, count_params, evaluate, index, score, search, train  # noqa: E402,F401  (registers)

__all__ = ["app"]
