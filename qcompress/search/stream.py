"""Exact top-k over an embedding Parquet file or folder larger than memory: `search_parquet`, streamed batch by
batch with the next batch read ahead, the batches' top-k merged by `TopK`.

Angles are ranked by log-fidelity (`FidelityIndex`, each batch pruned by the running k-th score), low-bit codes by
the log-fidelity of float32 query angles against their levels (`qcompress.search.codes.CodeIndex`, also pruned by
the running k-th score), vectors by cosine (`topk_cosine`). The result is that of the in-memory search over the
whole dataset read in order (files in name order), ties to the row that comes first.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, TypeVar

from torch import Tensor

from qcompress.formats.embeddings import codec_of, scan_embeddings
from qcompress.search.checks import check_2d, check_dims, check_k, float_angles
from qcompress.search.codes import CodeIndex
from qcompress.search.cosine import topk_cosine
from qcompress.search.fidelity import DEFAULT_CANDIDATES, FidelityIndex
from qcompress.search.selection import TopK

__all__ = ["search_parquet", "read_ahead", "SCORES_PER_BATCH", "MIN_BATCH_ROWS"]

T = TypeVar("T")
PathLike = str | os.PathLike

SCORES_PER_BATCH = 1 << 28  # search_parquet: most (query, document) scores held at once
MIN_BATCH_ROWS = 4096  # ... unless a batch would get fewer rows than this


def search_parquet(
    queries: Tensor,
    path: PathLike,
    k: int,
    *,
    batch_rows: int = 1 << 18,
    candidates: int = DEFAULT_CANDIDATES,
) -> tuple[Tensor, list[list[str]]]:
    """Exact top-k over a qcompress embedding Parquet file or folder, streamed batch by batch (bounded memory).

    Angles (`angles` column, float32 or uint8 codes) are ranked by log-fidelity, vectors (`vectors`) by cosine,
    low-bit codes (`codes`, SPEC §7) by the log-fidelity of the float32 queries against their levels (the
    asymmetric score of `qcompress.codes.topk`; for the symmetric one, pass the queries coded and decoded).
    Returns (scores (m, min(k, N)), ids: one list of document id strings per query), best first; ties go to the
    row that comes first (files in name order), so the result is `topk`'s on the whole dataset read in order.
    Memory: two batches of `batch_rows` rows (the one searched and the next, read ahead), the searched one's
    features and (m, batch_rows) scores, and the ids seen (compactly, to refuse a repeated one). With many queries
    the batches are smaller, so that the scores stay under SCORES_PER_BATCH numbers (1 GiB of float32; 10,000
    queries read 26,843 rows at a time). The file is checked as it is read (`qcompress.formats.scan_embeddings`):
    bad rows and duplicate ids raise `InputError` naming the file, row and id.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from qcompress.formats import EmbeddingWriter
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "emb.parquet"
        >>> with EmbeddingWriter(out, dim=2, metadata={"similarity": "fidelity"}) as w:
        ...     w.write(["a", "b", "c"], torch.tensor([[0.0, 0.0], [3.0, 3.0], [0.1, 0.0]]))
        >>> search_parquet(torch.tensor([[0.0, 0.1]]), out, 2)[1]
        [['a', 'c']]
    """
    k = check_k(k)
    check_2d(queries, "queries")
    # Fewer rows a batch for many queries: the (m, rows) scores stay under SCORES_PER_BATCH numbers.
    batch_rows = min(batch_rows, max(MIN_BATCH_ROWS, SCORES_PER_BATCH // max(1, queries.shape[0])))
    meta, batches = scan_embeddings(path, batch_rows=batch_rows, keep_codes=True, unique=True)
    cosine, codes, codec = meta["column"] == "vectors", meta["encoding"] == "uint8", codec_of(meta)
    if not cosine:
        queries = float_angles(queries, "queries")
    check_dims(queries, int(meta["dim"]))
    best = TopK(queries.shape[0], k)
    id_of: dict[int, str] = {}
    offset = 0
    for batch in read_ahead(batches):
        ids, values = batch.ids, batch.values
        if cosine:
            scores, local = topk_cosine(queries, values, k)
        elif codec is not None:
            scores, local = CodeIndex(values, codec).search(queries, k, floor=best.floor)
        else:
            index = FidelityIndex(values, corpus_codes=codes, cache_features=False, candidates=candidates)
            scores, local = index.search(queries, k, floor=best.floor)
        positions = local + offset
        for position, doc_id in zip(positions.flatten().tolist(), ids.take(local.flatten().numpy()).to_pylist()):
            id_of[position] = doc_id
        best.add(scores, positions)
        id_of = {p: id_of[p] for p in best.indices.flatten().tolist()}  # only the current winners' ids
        offset += len(values)
    return best.scores, [[id_of[p] for p in row] for row in best.indices.tolist()]


def read_ahead(batches: Iterator[T]) -> Iterator[T]:
    """The items of `batches`, each next one read in a background thread while the caller searches the current
    one: Parquet decoding releases the GIL, so reading overlaps the search (`benchmarks/search.py` times it).
    An error while reading is raised when its batch is reached, as without the read-ahead.

    Example:
        >>> list(read_ahead(iter("abc")))
        ['a', 'b', 'c']
    """
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(next, batches, _END)
        while (item := pending.result()) is not _END:
            pending = reader.submit(next, batches, _END)
            yield item


_END = object()
