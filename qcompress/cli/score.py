"""`qcompress score`: top-k runs from two Parquet files (exact) or a Parquet file and an index (approximate), or
scores of text pairs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from qcompress.cli._common import (
    check_model_options, check_writable, command, model_spec, note, progress_bars, quiet_closed_pipe, usage_error,
)
from qcompress.cli.options import (
    DEFAULT_BATCH_SIZE, BatchSize, Device, Encoder, Head, MaxLength, ModelDir, Revision, Similarity,
    TrustRemoteCode, value,
)
from qcompress.errors import InputError

Index = Annotated[Optional[Path], typer.Option(
    "--index",
    help="Instead of CORPUS: an approximate index (`qcompress index build`). Each query's --rerank best candidates "
    "of the IVF are re-ranked by exact log-fidelity; recall@10 against exact search on --recall-queries queries is "
    "printed on stderr.")]
RecallQueries = Annotated[int, typer.Option(
    "--recall-queries", min=0,
    help="With --index: queries (spread over the file) also searched exactly, to report recall@10; 0 skips it.")]
Output = Annotated[Optional[str], typer.Option(
    "-o", "--output", help="TREC run file to write (atomically). Default: stdout.")]
Pairs = Annotated[Optional[str], typer.Option(
    "--pairs",
    help="Instead of QUERIES CORPUS: (query, passage) pairs, TSV `query<TAB>passage` or JSONL (`query`, `passage`), "
    "or - for stdin. Prints one score per line, in order, with --model, --encoder or the default model.")]
Symmetric = Annotated[bool, typer.Option(
    "--symmetric",
    help="With a CORPUS (or --index) of low-bit codes: code the queries with the corpus's levels too, and score "
    "the decoded levels against each other (default: float32 query angles against the corpus's levels).")]
Candidates = Annotated[Optional[Path], typer.Option(
    "--candidates", metavar="RUN",
    help="With QUERIES CORPUS: re-rank only these candidates, a TREC run (qid Q0 docid rank score tag) from another "
    "system, e.g. a vector database's top 100 by inner product over `qcompress export --features`, or BM25. Each "
    "query's candidates are scored exactly and its --top-k best kept: the exact search's result when they hold its "
    "top k. Queries without candidates get none.")]
Fidelity = Annotated[bool, typer.Option(
    "--fidelity",
    help="With --pairs and an angle model: print the fidelity itself, in [0, 1] (underflows to 0 for unrelated "
    "texts), instead of the log-fidelity.")]


def _score_pairs(path: str, spec, device: Optional[str], fidelity: bool, batch_size: int) -> None:
    """`spec()`: the model's spec, asked for (and the default model's note printed) once the pairs are read."""
    import numpy as np

    from qcompress.formats import read_pairs
    from qcompress.similarity import paired_scores

    pairs = read_pairs(path)  # all of it, validated, before the model is loaded
    model = spec().load(device)

    if fidelity and model.similarity != "fidelity":
        raise InputError(f"--fidelity needs an angle model; this one compares by {model.similarity}")
    # Each distinct text is encoded once per role, however often it appears (one query against many passages).
    queries = list(dict.fromkeys(a for a, _ in pairs))
    passages = list(dict.fromkeys(b for _, b in pairs))
    with progress_bars() as start:
        advance = start("encoding", len(queries) + len(passages))
        q_emb = model.encode(queries, role="query", batch_size=batch_size, on_batch=advance, convert_to_tensor=True)
        p_emb = model.encode(passages, role="document", batch_size=batch_size, on_batch=advance,
                             convert_to_tensor=True)
    q_row, p_row = {t: i for i, t in enumerate(queries)}, {t: i for i, t in enumerate(passages)}
    q = q_emb[[q_row[a] for a, _ in pairs]]
    p = p_emb[[p_row[b] for _, b in pairs]]
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
    index: Index = None,
    nprobe: int = typer.Option(
        16, "--nprobe", min=1,
        help="With --index: IVF cells visited per query. More cells: higher recall, slower (measured, 10M x 128 "
        "clustered, 4,096 cells: 0.988 at 256, 0.994 at 320, 0.998 at 512; see the recall@10 printed by every run)."),
    rerank: int = typer.Option(100, "--rerank", min=1, help="With --index: candidates re-ranked exactly per query."),
    recall_queries: RecallQueries = 10,
    symmetric: Symmetric = False,
    candidates: Candidates = None,
    top_k: int = typer.Option(1000, "--top-k", min=1, help="Documents per query in the run."),
    output: Output = None,
    tag: str = typer.Option("qcompress", "--tag", help="Run tag, the last column of the TREC run."),
    pairs: Pairs = None,
    model_dir: ModelDir = None,
    revision: Revision = None,
    encoder: Encoder = None,
    head: Head = None,
    similarity: Similarity = None,
    fidelity: Fidelity = False,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    max_length: MaxLength = None,
    device: Device = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Rank a corpus for each query (exact top-k) into a TREC run, or score (query, passage) pairs.

    With two Parquet files: for every query, the --top-k documents by log-fidelity (angle models) or cosine
    (vector models), as TREC run lines `qid Q0 docid rank score tag`; scores are log-fidelities (<= 0, higher is
    closer) or cosines. Both files must come from the same model (their metadata is compared); uint8 codes
    compare fine with float32 angles of the same model. Ids must be unique in each file, and corpus angles in
    [0, pi], as for queries (an error names the file, row and id). With --index instead of CORPUS the search is
    approximate (faster beyond ~10M documents), and its recall against the exact search is reported.

    A CORPUS of low-bit codes (`compress --bits`, `quantize`) is ranked exactly on its codes: the float32 query
    angles against each document's levels (asymmetric), or with --symmetric the queries' own codes under the
    corpus's levels. Coded queries are read as their levels; two files coded with other levels are refused.

    With --pairs and a model (--model, --encoder and --similarity, or the default model; --batch-size,
    --max-length and --device apply to it): one score per pair and line, in input order: log-fidelity for
    fidelity models (--fidelity for the fidelity itself), cosine for cosine models.

    Examples:

        qcompress score queries.parquet corpus.parquet --top-k 100 -o run.trec --tag qbec
        qcompress score queries.parquet corpus-4bit.parquet --top-k 100 -o run.trec    # 4-bit codes
        qcompress score queries.parquet --index corpus.index --nprobe 32 --top-k 100 -o run.trec
        qcompress score queries.parquet corpus.parquet --candidates lancedb-top100.trec --top-k 10
        printf 'what is lift\\tLift is a force.\\n' | qcompress score --pairs - --model models/qbec
    """
    check_model_options(encoder, value(head), value(similarity))
    if pairs is not None:
        if queries is not None or corpus is not None or symmetric:
            usage_error("--pairs scores text pairs with a model; it takes no QUERIES CORPUS files (nor --symmetric)")
        return _score_pairs(pairs, lambda: model_spec(model_dir, encoder, value(head), value(similarity), max_length,
                                                      trust_remote_code, revision), device, fidelity, batch_size)
    if candidates is not None and (corpus is None or index is not None):
        usage_error("--candidates re-ranks a run against QUERIES CORPUS files (not --index)")
    if queries is None or (corpus is None) == (index is None):
        usage_error("give QUERIES and CORPUS Parquet files (from `qcompress compress`), QUERIES --index DIR, or "
                    "--pairs FILE")
    if model_dir is not None or encoder is not None or fidelity or revision is not None or device is not None:
        usage_error("QUERIES CORPUS are scored with the model named in their metadata; "
                    "--model/--revision/--encoder/--fidelity/--device go with --pairs")
    if output:
        check_writable(Path(output), "-o")
    with quiet_closed_pipe():
        if index is not None:
            _score_index(queries, index, top_k, output, tag, nprobe, rerank, recall_queries, symmetric)
        elif candidates is not None:
            _score_candidates(queries, corpus, candidates, top_k, output, tag, symmetric)
        else:
            _score_files(queries, corpus, top_k, output, tag, symmetric)


def _coded_queries(values, metadata: dict, symmetric: bool, corpus: Path):
    """The query angles to search with: with --symmetric, coded and decoded with the corpus's levels."""
    from qcompress.formats.embeddings import codec_of

    if not symmetric:
        return values
    codec = codec_of(metadata)
    if codec is None:
        raise InputError(f"--symmetric codes the queries with the levels of a corpus of low-bit codes; {corpus} holds "
                         f"{metadata['encoding']} {metadata['column']}")
    return codec.decode(codec.encode(values))


def _score_files(queries: Path, corpus: Path, top_k: int, output: Optional[str], tag: str, symmetric: bool) -> None:
    from qcompress.formats import check_same_model, read_embedding_metadata, read_embeddings
    from qcompress.search import search_parquet

    q = read_embeddings(queries)  # refuses duplicate ids, naming the file, row and id
    corpus_meta = read_embedding_metadata(corpus)
    check_same_model(q.metadata, corpus_meta, what=f"{queries} and {corpus}")
    values = _coded_queries(q.values, corpus_meta, symmetric, corpus)
    # The corpus is streamed batch by batch, its ids checked unique as they come: memory stays bounded.
    scores, doc_ids = search_parquet(values, corpus, top_k)
    _write(q.ids, scores, doc_ids, output, tag)


def _score_candidates(queries: Path, corpus: Path, candidates: Path, top_k: int, output: Optional[str], tag: str,
                      symmetric: bool) -> None:
    from qcompress.formats import check_same_model, read_embedding_metadata, read_embeddings, read_run, write_run
    from qcompress.search.rerank import rerank_parquet

    run = read_run(candidates)
    q = read_embeddings(queries)
    corpus_meta = read_embedding_metadata(corpus)
    check_same_model(q.metadata, corpus_meta, what=f"{queries} and {corpus}")
    try:
        ranked = rerank_parquet(_coded_queries(q.values, corpus_meta, symmetric, corpus), q.ids, corpus, run, top_k)
    except InputError as err:
        if err.field != "candidates":
            raise
        raise InputError(err.reason, file=candidates) from None
    write_run(output or "-", ranked, tag)
    if output:
        note(f"wrote the exact top {top_k} of the candidates of {sum(1 for d in ranked.values() if d):,} of "
             f"{len(q.ids):,} queries to {output}")


def _write(query_ids: list[str], scores, doc_ids: list[list[str]], output: Optional[str], tag: str) -> None:
    from qcompress.formats import write_run
    from qcompress.search.runs import run_from_ranking

    write_run(output or "-", run_from_ranking(query_ids, doc_ids, scores), tag)
    if output:
        note(f"wrote the top {scores.shape[1]} documents for each of {len(query_ids):,} queries to {output}")


def _score_index(queries: Path, index: Path, top_k: int, output: Optional[str], tag: str, nprobe: int,
                 rerank: int, recall_queries: int, symmetric: bool) -> None:
    import torch

    from qcompress.formats import check_same_model, read_embeddings
    from qcompress.search.approximate import ApproximateIndex, recall_at_k

    q = read_embeddings(queries)
    approx = ApproximateIndex(index)
    check_same_model(q.metadata, approx.metadata, what=f"{queries} and {index}")
    values = _coded_queries(q.values, approx.metadata, symmetric, index)
    scores, doc_ids = approx.search(values, top_k, nprobe=nprobe, rerank=rerank)
    _write(q.ids, scores, doc_ids, output, tag)
    short = sum(len(found) < scores.shape[1] for found in doc_ids)
    if short:
        note(f"note: for {short:,} of {len(q):,} queries the {nprobe} probed cells held fewer than {scores.shape[1]:,} "
             "documents: their rankings are shorter (raise --nprobe for more)")
    sample = min(recall_queries, len(q))
    if sample:
        picks = torch.linspace(0, len(q) - 1, sample).round().long().unique()
        k = min(10, len(approx))
        found = approx.search_rows(values[picks], k, nprobe=nprobe, rerank=rerank)[1]
        recall = recall_at_k(found, approx.exact_search(values[picks], k)[1])
        note(f"approximate search (nprobe {nprobe}, {rerank} candidates re-ranked): recall@{k} {recall:.3f} "
             f"against exact search on {len(picks)} of {len(q):,} queries")
