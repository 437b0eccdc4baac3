"""The `qcompress` command line: one module per command, each a thin layer over the library (options -> one
library call -> rendering). Its --help text is the documentation.

Importing this package loads typer and rich, not torch, transformers, pyarrow or scipy: each command imports the
library inside its function, so that `qcompress --help` and `qcompress COMMAND --help` are quick
(benchmarks/cli_startup.py; tests/test_cli_usage.py checks that torch is not imported).
"""

from qcompress.cli._common import app
from qcompress.cli import (  # noqa: E402,F401
    bench, compress, count_params, evaluate, export, index, meta, push, quantize, recipe, score, search, train,
)

__all__ = ["app", "command_paths"]


def command_paths() -> list[list[str]]:
    """The words after `qcompress` of every command and command group, as the app registers them (so that a list
    of commands cannot go stale).

    Example:
        >>> paths = command_paths()
        >>> ["compress"] in paths and ["index", "build"] in paths
        True
    """
    import typer.main

    def walk(group, prefix: list[str]) -> list[list[str]]:
        paths = []
        for name in sorted(group.commands):
            paths.append([*prefix, name])
            if hasattr(group.commands[name], "commands"):  # a group: its subcommands too
                paths.extend(walk(group.commands[name], [*prefix, name]))
        return paths

    return walk(typer.main.get_command(app), [])
