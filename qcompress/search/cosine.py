"""Exact top-k by cosine similarity, with the same tie rule as every top-k (`qcompress.search.selection`).

Cosine models store float vectors; `qcompress.search.stream.search_parquet` uses these functions for files with
a `vectors` column.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qcompress.search.checks import check_2d, check_dims, check_finite, check_k
from qcompress.search.pairs import UNIT_ROUNDOFF, cosine_pairs, score_rows, unit_vectors
from qcompress.search.selection import append_ragged, empty_result, rank, select_topk
from qcompress.search.workers import DEFAULT_CHUNK_ELEMENTS

__all__ = ["topk_cosine", "brute_force_topk_cosine"]


def topk_cosine(
    queries: Tensor,
    corpus: Tensor,
    k: int,
    *,
    candidates: int = 32,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Exact top-k by cosine similarity: (scores, indices), (m, min(k, N)), best first, ties to the lower index.

    A blocked matmul finds candidates; their scores are then recomputed one dot product per pair
    (`qcompress.search.pairs.cosine_pairs`), so that equal rows get bit-identical scores (a matmul's rounding
    depends on where a row falls in the blocking) and the tie rule holds. The matmul's rounding error is bounded,
    and every row within it of the k-th score is rescored, so the result is exact for these per-pair scores. Zero
    vectors score 0, and vectors of extreme norms (3e38, 1e-30) their cosine (`qcompress.search.pairs.unit_vectors`). Memory: the (m, N) similarities and temporaries of `chunk_elements`.

    Example:
        >>> topk_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0], [3.0, 0.0], [1.0, 0.0]]), 2)
        (tensor([[1., 1.]]), tensor([[1, 2]]))
    """
    k = check_k(k)
    for name, x in (("queries", queries), ("corpus", corpus)):
        check_2d(x, name)
        if not x.is_floating_point():
            raise ValueError(f"{name} must be float vectors, got dtype {x.dtype}")
    queries, corpus = queries.detach().to(torch.float32), corpus.detach().to(torch.float32)
    check_finite(queries, "queries")
    check_finite(corpus, "corpus")
    check_dims(queries, corpus.shape[1])
    m, size = queries.shape[0], corpus.shape[0]
    k = min(k, size)
    if m == 0 or size == 0:
        return empty_result(m, k)
    queries = unit_vectors(queries)

    def exact(rows: Tensor, docs: Tensor) -> Tensor:
        return cosine_pairs(queries, corpus, rows, docs, chunk_elements=chunk_elements)

    sims = torch.empty(m, size)
    step = max(1, chunk_elements // max(1, corpus.shape[1]))
    for start in range(0, size, step):
        sims[:, start : start + step] = queries @ unit_vectors(corpus[start : start + step]).T
    seed = min(size, max(k, candidates))
    if seed == size:
        return select_topk(score_rows(exact, torch.arange(size).expand(m, size)), k)
    top, seed_docs = sims.topk(seed + 1, dim=1)
    seed_docs = seed_docs[:, :seed]
    seed_scores = score_rows(exact, seed_docs)
    kth = seed_scores.topk(k, dim=1).values[:, -1]
    # Both the matmul and the rescoring of unit vectors err by at most ~n u (plus normalisation): 4x that margin.
    margin = 4 * UNIT_ROUNDOFF * (corpus.shape[1] + 8)
    threshold = kth - margin
    todo = (top[:, seed] >= threshold).nonzero().flatten()
    rows = docs = torch.empty(0, dtype=torch.int64)
    if todo.numel():
        mask = sims[todo] >= threshold[todo, None]
        mask.scatter_(1, seed_docs[todo], False)
        local, docs = mask.nonzero(as_tuple=True)
        rows = todo[local]
    return rank(*append_ragged(seed_scores, seed_docs, rows, docs, exact(rows, docs), sentinel=size), k)


def brute_force_topk_cosine(queries: Tensor, corpus: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Reference for `topk_cosine`: every pair scored one dot product at a time, then the top-k (same tie rule).

    Example:
        >>> brute_force_topk_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [2.0, 0.0]]), 1)
        (tensor([[1.]]), tensor([[1]]))
    """
    k = check_k(k)
    queries = unit_vectors(queries.to(torch.float32))
    corpus = corpus.to(torch.float32)
    size = corpus.shape[0]
    scores = score_rows(lambda r, d: cosine_pairs(queries, corpus, r, d, chunk_elements=DEFAULT_CHUNK_ELEMENTS),
                        torch.arange(size).expand(queries.shape[0], size))
    return select_topk(scores, k)
