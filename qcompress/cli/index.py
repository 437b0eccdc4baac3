"""`qcompress index build`: an approximate index of an embedding file (qcompress.search.approximate)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from qcompress.cli._common import bar_on_first_use, command, command_group, progress_bars, stderr
from qcompress.errors import InputError

index_app = command_group(
    "index", "Approximate indexes for corpora beyond exact search (searched by `qcompress score --index`).")


@command("build", index_app)
def build_command(
    corpus: Path = typer.Argument(..., metavar="CORPUS", help="Corpus embeddings (angles, or low-bit codes): a Parquet file or folder."),
    output: Path = typer.Option(..., "-o", "--output", help="Index folder to write (atomically)."),
    nlist: Optional[int] = typer.Option(
        None, "--nlist", min=1, help="IVF cells (the factory string's {nlist}). Default: about the square root of the "
        "corpus's rows."
    ),
    factory: str = typer.Option(
        "IVF{nlist},SQ8", "--factory",
        help="The faiss index-factory string of the index over the 2n [cos; sin] features (inner product); {nlist} "
        "stands for the IVF cells. The default is IVF with 8-bit scalar codes; e.g. IVF{nlist},Flat (exact "
        "distances in the cells), IVF{nlist},PQ16 (16-byte codes), HNSW32 (a graph: --nprobe sets its efSearch). "
        "A string faiss rejects is an error before the corpus is read."),
    force: bool = typer.Option(False, "--force", help="Replace an existing index folder."),
) -> None:
    """Build an IVF index over the corpus's [cos; sin] features (faiss, 8-bit scalar codes), with a copy of its
    ids and angles (or low-bit codes: the features of their levels) for the exact re-ranking.

    `qcompress score QUERIES --index DIR` then proposes candidates from the --nprobe nearest cells and re-ranks
    them by exact log-fidelity, reporting recall@10 against the exact search.

    Example:

        qcompress index build corpus.parquet -o corpus.index
        qcompress index build corpus.parquet -o corpus-pq.index --factory "IVF{nlist},PQ16"
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
        info = build_index(corpus, output, nlist=nlist, overwrite=force, factory=factory,
                           on_rows=bar_on_first_use(start, "indexing", rows))
    cells = f" in {info.nlist:,} cells" if info.nlist is not None else ""
    stderr.print(f"indexed {info.rows:,} rows{cells} to {output} (faiss {info.factory}; training "
                 f"{info.train_seconds:.1f} s, adding {info.add_seconds:.1f} s)", highlight=False, markup=False,
                 soft_wrap=True)
