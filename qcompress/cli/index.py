"""`qcompress index build`: an approximate index of an embedding file (qcompress.search.approximate)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from qcompress.cli._common import Command, Group, app, bar_on_first_use, cli_errors, progress_bars, stderr
from qcompress.errors import InputError

index_app = typer.Typer(
    cls=Group,
    help="Approximate indexes for corpora beyond exact search (searched by `qcompress score --index`).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(index_app, name="index")


@index_app.command("build", cls=Command)
@cli_errors
def build_command(
    corpus: Path = typer.Argument(..., metavar="CORPUS", help="Corpus embeddings (angles, or low-bit codes): a Parquet file or folder."),
    output: Path = typer.Option(..., "-o", "--output", help="Index folder to write (atomically)."),
    nlist: Optional[int] = typer.Option(
        None, "--nlist", min=1, help="IVF cells. Default: about the square root of the corpus's rows."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing index folder."),
) -> None:
    """Build an IVF index over the corpus's [cos; sin] features (faiss, 8-bit scalar codes), with a copy of its
    ids and angles (or low-bit codes: the features of their levels) for the exact re-ranking.

    `qcompress score QUERIES --index DIR` then proposes candidates from the --nprobe nearest cells and re-ranks
    them by exact log-fidelity, reporting recall@10 against the exact search.

    Example:

        qcompress index build corpus.parquet -o corpus.index
        qcompress score queries.parquet --index corpus.index --nprobe 32 -o run.trec
    """
    from qcompress.formats import count_embedding_rows
    from qcompress.search.approximate import build_index

    if output.exists() and not output.is_dir():  # a file, a pipe, a device: never replaced by a folder
        raise InputError(f"-o {output}: exists and is not a folder; give a folder path")
    if output.exists() and not force:
        raise InputError(f"-o {output}: already exists; pass --force to replace it")
    rows = count_embedding_rows(corpus)
    with progress_bars() as start:
        info = build_index(corpus, output, nlist=nlist, overwrite=force, on_rows=bar_on_first_use(start, "indexing", rows))
    stderr.print(f"indexed {info.rows:,} rows in {info.nlist:,} cells to {output} (k-means {info.train_seconds:.1f} s, "
                 f"adding {info.add_seconds:.1f} s)", highlight=False, markup=False, soft_wrap=True)
