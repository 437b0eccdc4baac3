"""`qcompress score`: exact top-k runs from two Parquet files, or scores of text pairs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from qcompress.cli._common import (
    check_model_options, check_writable, command, model_spec, note, progress_bars, usage_error,
)
from qcompress.cli.options import (
    DEFAULT_BATCH_SIZE, BatchSize, Device, Encoder, Head, MaxLength, ModelDir, Similarity, TrustRemoteCode, value,
)


def _score_pairs(pairs: list[tuple[str, str]], model, fidelity: bool, batch_size: int) -> None:
    import numpy as np

    from qcompress.similarity import paired_scores

    if fidelity and model.similarity != "fidelity":
        raise ValueError(f"--fidelity needs an angle model; this one compares by {model.similarity}")
    # Each distinct text is encoded once, however often it appears (one query against many passages).
    texts = list(dict.fromkeys(t for pair in pairs for t in pair))
    row = {t: i for i, t in enumerate(texts)}
    with progress_bars() as start:
        emb = model.encode(texts, batch_size=batch_size, on_batch=start("encoding", len(texts)))
    q = emb[[row[a] for a, _ in pairs]]
    p = emb[[row[b] for _, b in pairs]]
    scores = paired_scores(q, p, model.similarity, log=not fidelity) if pairs else q.new_empty(0)
    # str(float32): the shortest text that reads back as the same float32 value.
    sys.stdout.write("".join(str(np.float32(s)) + "\n" for s in scores.tolist()))
    sys.stdout.flush()


@command("score")
def score_command(
    queries: Optional[Path] = typer.Argument(
        None, metavar="QUERIES", help="Query embeddings: a Parquet file from `qcompress compress`."
    ),
    corpus: Optional[Path] = typer.Argument(
        None, metavar="CORPUS", help="Corpus embeddings: a Parquet file, or a folder of them, from the same model."
    ),
    top_k: int = typer.Option(1000, "--top-k", min=1, help="Documents per query in the run."),
    output: Optional[str] = typer.Option(
        None, "-o", "--output", help="TREC run file to write (atomically). Default: stdout."
    ),
    tag: str = typer.Option("qcompress", "--tag", help="Run tag, the last column of the TREC run."),
    pairs: Optional[str] = typer.Option(
        None, "--pairs",
        help="Instead of QUERIES CORPUS: (query, passage) pairs, TSV `query<TAB>passage` or JSONL "
        "(`query`, `passage`), or - for stdin. Prints one score per line, in order, with --model, --encoder or "
        "the default model.",
    ),
    model_dir: ModelDir = None,
    encoder: Encoder = None,
    head: Head = None,
    similarity: Similarity = None,
    fidelity: bool = typer.Option(
        False, "--fidelity",
        help="With --pairs and an angle model: print the fidelity itself, in [0, 1] (underflows to 0 for "
        "unrelated texts), instead of the log-fidelity.",
    ),
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    max_length: MaxLength = None,
    device: Device = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Rank a corpus for each query (exact top-k) into a TREC run, or score (query, passage) pairs.

    With two Parquet files: for every query, the --top-k documents by log-fidelity (angle models) or cosine
    (vector models), as TREC run lines `qid Q0 docid rank score tag`; scores are log-fidelities (<= 0, higher is
    closer) or cosines. Both files must come from the same model (their metadata is compared); uint8 codes
    compare fine with float32 angles of the same model.

    With --pairs and a model (--model, --encoder and --similarity, or the default model; --batch-size,
    --max-length and --device apply to it): one score per pair and line, in input order: log-fidelity for
    fidelity models (--fidelity for the fidelity itself), cosine for cosine models.

    Examples:

        qcompress score queries.parquet corpus.parquet --top-k 100 -o run.trec --tag qbec
        printf 'what is lift\\tLift is a force.\\n' | qcompress score --pairs - --model models/qbec
    """
    check_model_options(encoder, value(head), value(similarity))
    if pairs is not None:
        if queries is not None or corpus is not None:
            usage_error("--pairs scores text pairs with a model; it takes no QUERIES CORPUS files")
        from qcompress.formats import read_pairs

        records = read_pairs(pairs)  # all of it, validated, before the model is loaded
        spec = model_spec(model_dir, encoder, value(head), value(similarity), max_length, trust_remote_code)
        _score_pairs(records, spec.load(device), fidelity, batch_size)
        return
    if queries is None or corpus is None:
        usage_error("give QUERIES and CORPUS Parquet files (from `qcompress compress`), or --pairs FILE")
    if model_dir is not None or encoder is not None or fidelity or device is not None:
        usage_error("QUERIES CORPUS are scored with the model named in their metadata; "
                    "--model/--encoder/--fidelity/--device go with --pairs")
    if output:
        check_writable(Path(output), "-o")
    _score_files(queries, corpus, top_k, output, tag)


def _score_files(queries: Path, corpus: Path, top_k: int, output: Optional[str], tag: str) -> None:
    from qcompress.formats import check_same_model, read_embedding_metadata, read_embeddings, write_run
    from qcompress.search import search_parquet

    q = read_embeddings(queries)
    check_same_model(q.metadata, read_embedding_metadata(corpus), what=f"{queries} and {corpus}")
    # The corpus is streamed batch by batch: memory stays bounded for corpora larger than memory.
    scores, doc_ids = search_parquet(q.values, corpus, top_k)
    run = {qid: dict(zip(doc_ids[row], scores[row].tolist())) for row, qid in enumerate(q.ids)}
    write_run(output or "-", run, tag)
    if output:
        note(f"wrote the top {scores.shape[1]} documents for each of {len(q):,} queries to {output}")
