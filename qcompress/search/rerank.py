"""Exact re-ranking of candidates that another system proposed (a vector database's top 100 by inner product, a
BM25 run): `rerank_parquet`, the path of `qcompress score QUERIES CORPUS --candidates RUN`.

Each query's candidates are scored exactly, by the pair scorer every exact search settles its results with
(`qcompress.search.pairs`: log-fidelity of angles, 8-bit or low-bit codes decoded, or cosine of vectors), and
ranked by the tie rule of every top-k (`qcompress.search.selection.rank`: score desc, then corpus row asc). So
when a query's candidates hold its exact top k, the result is exactly what the exact search over the whole corpus
returns, scores to the bit. Only the candidates' rows are kept in memory: the corpus is streamed once.

Example:
    >>> import tempfile, pathlib
    >>> from qcompress.formats import EmbeddingWriter
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "emb.parquet"
    >>> with EmbeddingWriter(out, dim=2, metadata={"similarity": "fidelity"}) as w:
    ...     w.write(["a", "b", "c"], torch.tensor([[0.0, 0.0], [3.0, 3.0], [0.1, 0.0]]))
    >>> run = rerank_parquet(torch.tensor([[0.0, 0.1]]), ["q"], out, {"q": {"b": 9.0, "c": 1.0}}, 1)
    >>> {doc: round(score, 4) for doc, score in run["q"].items()}   # c's log-fidelity; b is farther
    {'c': -0.005}
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import Tensor

from qcompress.errors import InputError
from qcompress.formats.embeddings import codec_of, scan_embeddings
from qcompress.search.checks import check_2d, check_dims, check_k, float_angles
from qcompress.search.pairs import cosine_pairs, log_fidelity_pairs
from qcompress.search.runs import Run
from qcompress.search.selection import rank

__all__ = ["rerank_parquet"]

PathLike = str | os.PathLike


def _candidate_rows(path: PathLike, wanted: set[str]) -> tuple[dict, Tensor, dict[str, int], dict[str, int]]:
    """(metadata, the stored values of the wanted documents, id -> position in those values, id -> corpus row)."""
    meta, batches = scan_embeddings(path, keep_codes=True, unique=True)
    value_set = pa.array(sorted(wanted), pa.string())
    parts, position, corpus_row, offset = [], {}, {}, 0
    for batch in batches:
        hit = pc.is_in(batch.ids, value_set=value_set)
        if pc.any(hit).as_py():
            mask = torch.from_numpy(hit.to_numpy(zero_copy_only=False))
            local = mask.nonzero().flatten()
            for row, doc_id in zip(local.tolist(), batch.ids.filter(hit).to_pylist()):
                position[doc_id], corpus_row[doc_id] = len(position), offset + row
            parts.append(batch.values[local])
        offset += len(batch.ids)
    return meta, (torch.cat(parts) if parts else torch.empty(0)), position, corpus_row


def rerank_parquet(
    queries: Tensor, query_ids: Sequence[str], path: PathLike, candidates: Mapping[str, Mapping[str, float]], k: int
) -> Run:
    """Each query's candidate documents (`candidates`: {query id: {doc id: anything}}, e.g. a TREC run) scored
    exactly against the embedding file or folder `path`, its best `k` kept: {query id: {doc id: score}}, best
    first. A query without candidates gets an empty ranking. `InputError` for a candidate query that is not in
    `query_ids` or a candidate document that is not in the corpus (both named)."""
    k = check_k(k)
    check_2d(queries, "queries")
    row_of = {qid: row for row, qid in enumerate(query_ids)}
    unknown = next((qid for qid in candidates if qid not in row_of), None)
    if unknown is not None:
        raise InputError(f"the candidates name query {unknown!r}, which the queries do not have", field="candidates")
    meta, stored, position, corpus_row = _candidate_rows(path, {d for docs in candidates.values() for d in docs})
    missing = next(((qid, d) for qid, docs in candidates.items() for d in docs if d not in position), None)
    if missing is not None:
        raise InputError(f"the candidates of query {missing[0]!r} name document {missing[1]!r}, which is not in "
                         f"{path}", field="candidates")
    cosine, codec = meta["column"] == "vectors", codec_of(meta)
    queries = F.normalize(queries.float(), dim=-1) if cosine else float_angles(queries, "queries")
    check_dims(queries, int(meta["dim"]))
    run: Run = {qid: {} for qid in query_ids}
    for qid, docs in candidates.items():
        if not docs:
            continue
        ids = list(docs)
        rows = torch.full((len(ids),), row_of[qid], dtype=torch.long)
        at = torch.tensor([position[d] for d in ids])
        if cosine:
            scores = cosine_pairs(queries, stored, rows, at)
        else:
            scores = log_fidelity_pairs(queries, stored, rows, at, codes=meta["encoding"] == "uint8",
                                        decode=None if codec is None else codec.decode)
        best, order = rank(scores[None], torch.tensor([corpus_row[d] for d in ids])[None], k)
        by_row = {corpus_row[d]: d for d in ids}
        run[qid] = {by_row[r]: s for r, s in zip(order[0].tolist(), best[0].tolist())}
    return run
