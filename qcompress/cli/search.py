"""`qcompress search`: ad-hoc query texts against a compressed corpus (qcompress.search.text)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from qcompress.cli._common import command, model_spec, print_table, quiet_closed_pipe
from qcompress.cli.options import (
    AsJson, Backend, BackendChoice, Device, Encoder, Head, MaxLength, ModelDir, Revision, Similarity, TrustRemoteCode,
    chosen_backend, value,
)


@command("search")
def search_command(
    query: str = typer.Argument(..., metavar="QUERY", help="The query text."),
    corpus: Path = typer.Option(
        ..., "--corpus", help="Corpus embeddings from `qcompress compress` (a Parquet file or folder; low-bit codes "
        "are ranked on their codes)."
    ),
    top_k: int = typer.Option(10, "--top-k", min=1, help="Hits to show."),
    model_dir: ModelDir = None,
    revision: Revision = None,
    encoder: Encoder = None,
    head: Head = None,
    similarity: Similarity = None,
    max_length: MaxLength = None,
    device: Device = None,
    backend: Backend = BackendChoice.torch,
    trust_remote_code: TrustRemoteCode = False,
    as_json: AsJson = False,
) -> None:
    """Search a compressed corpus with a query text: the query is encoded with the model (which must be the one
    that compressed the corpus: their weights digests are compared) and the corpus ranked exactly.

    Prints a table (rank, score, id, and the text when the corpus keeps texts: `compress --store-text`), or
    with --json one JSON object per hit (`rank`, `id`, `score`, `text`).

    Example:

        qcompress search "what is lift" --corpus corpus.parquet --model models/qbec --top-k 5
    """
    from qcompress.search.text import search_texts

    spec = model_spec(model_dir, encoder, value(head), value(similarity), max_length, trust_remote_code, revision,
                      backend=chosen_backend(backend, device))
    model = spec.load(device)
    hits = search_texts(model, [query], corpus, top_k)[0]
    with quiet_closed_pipe():
        if as_json:
            sys.stdout.write("".join(json.dumps({"rank": h.rank, "id": h.id, "score": h.score, "text": h.text}) + "\n"
                                     for h in hits))
            return
        _print_hits(hits, with_text=any(h.text is not None for h in hits))


def _print_hits(hits, with_text: bool) -> None:
    from rich.table import Table

    table = Table(box=None)
    for name in ("rank", "score", "id") + (("text",) if with_text else ()):
        table.add_column(name, justify="right" if name in ("rank", "score") else "left", overflow="fold")
    for hit in hits:
        table.add_row(str(hit.rank), f"{hit.score:.4f}", hit.id, *((hit.text or "",) if with_text else ()))
    print_table(table)
