"""`python -m qcompress.recipes ARGS`: the same as `qcompress recipe ARGS` (qcompress/cli/recipe.py), which declares
the options; the package docstring describes recipes and outputs.

    python -m qcompress.recipes recipes/variants.toml --profile offline            # run, then aggregate
    python -m qcompress.recipes recipes/*.toml --profile offline --dry-run          # list the runs only
"""

from __future__ import annotations

import sys
from typing import Sequence

from qcompress.cli import app
from qcompress.cli.recipe import DEFAULT_OUT

__all__ = ["main", "DEFAULT_OUT"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run `qcompress recipe` with `argv` (default: this process's arguments); return its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(["recipe", *args], prog_name="qcompress")
    except SystemExit as done:  # the command line always ends this way
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
