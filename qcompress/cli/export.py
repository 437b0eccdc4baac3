"""`qcompress export`: an embedding file as inner-product features for a vector database (qcompress.export)."""

from __future__ import annotations

from pathlib import Path

import typer

from qcompress.cli._common import check_writable, command, note, usage_error


@command("export")
def export_command(
    corpus: Path = typer.Argument(..., metavar="CORPUS", help="An embedding file or folder from `qcompress compress`."),
    features: bool = typer.Option(
        False, "--features",
        help="Write inner-product features: cos and sin of each qubit angle (2n float32; codes decoded first), or "
        "the L2-normalised vectors of a cosine model. (The only export so far: it must be named.)"),
    output: Path = typer.Option(..., "-o", "--output", help="Parquet file to write (atomically): id, features, and "
                                "the text when CORPUS keeps it."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
) -> None:
    """Export CORPUS for an inner-product index (LanceDB, DuckDB, faiss, any vector database).

    The inner product of two rows' features is the sum over qubits of cos(q_i - d_i), and log-fidelity <=
    n * log((1 + inner / n) / 2) increases with it (SPEC §2): a vector database's top 100 by inner product are the
    candidates, and `qcompress score QUERIES CORPUS --candidates RUN` re-ranks them by the exact log-fidelity (the
    exact top k whenever the candidates hold it; measure the recall on your data). The README has the LanceDB and
    DuckDB recipe.

    Example:

        qcompress export corpus.parquet --features -o corpus-features.parquet
        qcompress export queries.parquet --features -o query-features.parquet
    """
    from qcompress.errors import InputError
    from qcompress.export import export_features

    if not features:
        usage_error("name what to export: --features (inner-product features for a vector database)")
    if output.exists() and not force:
        raise InputError(f"-o {output}: already exists; pass --force to replace it")
    check_writable(output, "-o")
    rows = export_features(corpus, output)
    note(f"wrote the features of {rows:,} rows of {corpus} to {output}")
