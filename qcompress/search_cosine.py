"""Exact top-k by cosine similarity, with the same tie rule as every top-k (`qcompress.search_base`).

Cosine models store float vectors; `qcompress.search` re-exports these functions and `search_parquet` uses them
for files with a `vectors` column.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from qcompress.search_base import (
    DEFAULT_CHUNK_ELEMENTS,
    UNIT_ROUNDOFF,
    append_ragged,
    check_2d,
    check_dims,
    check_finite,
    check_k,
    empty_result,
    rank,
    select_topk,
)

__all__ = ["topk_cosine", "brute_force_topk_cosine"]


def _cosine_pairs(queries: Tensor, corpus: Tensor, rows: Tensor, docs: Tensor, chunk_elements: int) -> Tensor:
    """Cosine of the pairs, one row-wise dot product each: the same value wherever the pair sits in a batch."""
    out = torch.empty(rows.numel(), dtype=torch.float32)
    step = max(1, chunk_elements // max(1, corpus.shape[1]))
    for s in range(0, rows.numel(), step):
        r, d = rows[s : s + step], docs[s : s + step]
        out[s : s + r.numel()] = (queries[r] * F.normalize(corpus[d], dim=-1)).sum(-1)
    return out


def topk_cosine(
    queries: Tensor,
    corpus: Tensor,
    k: int,
    *,
    candidates: int = 32,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Exact top-k by cosine similarity: (scores, indices), (m, min(k, N)), best first, ties to the lower index.

    A blocked matmul finds candidates; their scores are then recomputed one dot product per pair, so that equal
    rows get bit-identical scores (a matmul's rounding depends on where a row falls in the blocking) and the
    tie rule holds. The matmul's rounding error is bounded, and every row within it of the k-th score is
    rescored, so the result is exact for these per-pair scores. Zero vectors score 0 (as in `F.normalize`).

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
    queries = F.normalize(queries, dim=-1)
    sims = torch.empty(m, size)
    step = max(1, chunk_elements // max(1, corpus.shape[1]))
    for start in range(0, size, step):
        sims[:, start : start + step] = queries @ F.normalize(corpus[start : start + step], dim=-1).T
    seed = min(size, max(k, candidates))
    if seed == size:
        rows, docs = torch.arange(m).repeat_interleave(size), torch.arange(size).repeat(m)
        return select_topk(_cosine_pairs(queries, corpus, rows, docs, chunk_elements).view(m, size), k)
    top, seed_docs = sims.topk(seed + 1, dim=1)
    seed_docs = seed_docs[:, :seed]
    seed_scores = _cosine_pairs(queries, corpus, torch.arange(m).repeat_interleave(seed), seed_docs.flatten(),
                                chunk_elements).view(m, seed)
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
    scores = _cosine_pairs(queries, corpus, rows, docs, chunk_elements)
    return rank(*append_ragged(seed_scores, seed_docs, rows, docs, scores, sentinel=size), k)


def brute_force_topk_cosine(queries: Tensor, corpus: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Reference for `topk_cosine`: every pair scored one dot product at a time, then the top-k (same tie rule)."""
    k = check_k(k)
    queries = F.normalize(queries.to(torch.float32), dim=-1)
    corpus = corpus.to(torch.float32)
    m, size = queries.shape[0], corpus.shape[0]
    rows, docs = torch.arange(m).repeat_interleave(size), torch.arange(size).repeat(m)
    return select_topk(_cosine_pairs(queries, corpus, rows, docs, DEFAULT_CHUNK_ELEMENTS).view(m, size), k)

