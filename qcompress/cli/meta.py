"""`qcompress meta copy` and `meta show`: an embedding file's metadata, put back after a DataFrame round trip, or
printed (qcompress.formats.meta_copy, qcompress.formats.metadata)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from qcompress.cli._common import check_writable, command, command_group, note, print_json

meta_app = command_group(
    "meta", "An embedding file's metadata: put it back on a copy written by pandas, polars or DuckDB, or print it.")


@command("copy", meta_app)
def copy_command(
    source: Path = typer.Argument(..., metavar="SOURCE", help="The embedding file (or folder) from `qcompress "
                                  "compress` whose rows the copy holds."),
    copy: Path = typer.Argument(..., metavar="COPY", help="A Parquet copy of some or all of SOURCE's rows, without "
                                "the metadata (written back by pandas, polars, DuckDB...)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Where to write the result (atomically). "
                                          "Default: over COPY."),
) -> None:
    """Put SOURCE's metadata (model, encoding, dim...) back on COPY, so that `qcompress score` reads it again.

    Checked first, and nothing is written when a check fails: COPY has a string `id` and SOURCE's values column
    (`angles`, `vectors` or `codes`) of its encoding, every row of the right length (`list<float>`, as pandas and
    DuckDB write back, is converted to the fixed-size list qcompress writes); every id of COPY is an id of SOURCE,
    once, with exactly SOURCE's values (a filtered copy, in any order; never another file's rows). COPY's other
    columns and key-value metadata are kept.

    Example:

        python -c "import pandas as pd; d = pd.read_parquet('c.parquet'); d[d.id.str.startswith('a')].to_parquet('a.parquet')"
        qcompress meta copy c.parquet a.parquet
        qcompress score queries.parquet a.parquet -o run.trec
    """
    from qcompress.formats.meta_copy import copy_metadata

    target = output if output is not None else copy
    check_writable(target, "-o" if output is not None else "COPY")
    done = copy_metadata(source, copy, output)
    note(f"wrote {target}: {done.rows:,} of the {done.source_rows:,} rows of {source}, with its metadata")


@command("show", meta_app)
def show_command(
    path: Path = typer.Argument(..., metavar="FILE", help="An embedding file or folder from `qcompress compress`."),
) -> None:
    """Print an embedding file's metadata as one JSON object (the `qcompress.FIELD` keys, or an older file's one
    JSON value): model, model_id, model_ref, encoding, decoding, score, codes...

    Example:

        qcompress meta show corpus.parquet
    """
    from qcompress.formats import read_embedding_metadata

    print_json(read_embedding_metadata(path))
