"""The `qcompress` command line: one module per command, each a thin layer over the library (options -> one
library call -> rendering). Its --help text is the documentation.

Importing this package loads typer and rich, not torch, transformers, pyarrow or scipy: each command imports the
library inside its function, so that `qcompress --help` and `qcompress COMMAND --help` are quick
(benchmarks/cli_startup.py; tests/test_cli_startup.py checks that torch is not imported).
"""

from qcompress.cli._common import app
from qcompress.cli import (  # noqa: E402,F401
    bench, compress, count_params, evaluate, index, quantize, recipe, score, search, train,
)

__all__ = ["app"]
