"""The tie rule of every top-k in qcompress, and the one way partial top-k results are merged.

Results are ordered by (score desc, index asc), so that equal scores always resolve the same way, towards the
lower corpus index, whichever search produced them (fidelity, cosine, streamed, approximate) and however the
corpus was split. `select_topk` takes the top-k of a dense score matrix, `rank` orders given candidates,
`append_ragged` adds a ragged set of extra candidates to a dense one, and `TopK` keeps the running top-k of a
corpus searched batch by batch (`brute_force_topk`, `search_parquet`, the approximate index's exact search).

Example:
    >>> select_topk(torch.tensor([[1.0, 3.0, 2.0, 3.0]]), 3)
    (tensor([[3., 3., 2.]]), tensor([[1, 3, 2]]))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["rank", "select_topk", "empty_result", "append_ragged", "TopK"]


def rank(scores: Tensor, indices: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k best of each row, ordered by (score desc, index asc). `indices` must be distinct within a row.

    Example:
        >>> rank(torch.tensor([[2.0, 5.0, 5.0]]), torch.tensor([[7, 9, 3]]), 2)
        (tensor([[5., 5.]]), tensor([[3, 9]]))
    """
    order = indices.argsort(dim=1)
    scores, indices = scores.gather(1, order), indices.gather(1, order)
    # A stable sort keeps equal scores in ascending index order: that is the tie rule.
    order = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), indices.gather(1, order)


def select_topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of a dense (m, L) score matrix (column = index), ties resolved towards the lower index.

    torch.topk picks arbitrarily among equal values at the boundary, so rows whose k-th and (k+1)-th values are
    equal are redone from all the row's entries equal to the k-th value, lowest indices first.
    """
    m, length = scores.shape
    k = min(k, length)
    if k == length:
        return rank(scores, torch.arange(length).expand(m, length), k)
    values, indices = scores.topk(k + 1, dim=1)
    values, indices, boundary = values[:, :k], indices[:, :k].clone(), values[:, k]
    for row in (boundary == values[:, -1]).nonzero().flatten().tolist():
        kth = values[row, -1]
        above = (scores[row] > kth).nonzero().flatten()
        tied = (scores[row] == kth).nonzero().flatten()[: k - above.numel()]
        indices[row] = torch.cat([above, tied])
        values[row] = scores[row, indices[row]]
    return rank(values, indices, k)


def empty_result(m: int, k: int) -> tuple[Tensor, Tensor]:
    """(float32 scores, int64 indices) of shape (m, k), uninitialised: the dtypes of every search's result."""
    return torch.empty(m, k, dtype=torch.float32), torch.empty(m, k, dtype=torch.int64)


def append_ragged(
    scores: Tensor, indices: Tensor, rows: Tensor, docs: Tensor, extra: Tensor, *, sentinel: int
) -> tuple[Tensor, Tensor]:
    """Dense (m, C) scores/indices plus ragged (row, doc, score) triples -> dense (m, C + max extras per row)."""
    m = scores.shape[0]
    if rows.numel() == 0:
        return scores, indices
    order = rows.argsort(stable=True)
    rows, docs, extra = rows[order], docs[order], extra[order]
    counts = torch.bincount(rows, minlength=m)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(rows.numel()) - starts[rows]
    width = int(counts.max())
    pad_scores = torch.full((m, width), -math.inf)
    # Distinct sentinels keep the indices of a row distinct; padding (-inf) is never selected (each row has C >= k).
    pad_indices = (sentinel + torch.arange(width)).expand(m, width).clone()
    pad_scores[rows, slot] = extra
    pad_indices[rows, slot] = docs
    return torch.cat([scores, pad_scores], 1), torch.cat([indices, pad_indices], 1)


class TopK:
    """The running top-k of `m` queries over a corpus searched in batches, by the tie rule.

    `add` each batch's candidates (scores and corpus indices, an index never given twice for a row); `scores` and
    `indices` hold the k best so far, best first (float32 and int64, fewer than k columns until k were given).
    `floor` is the k-th score of each row once k are held: a later candidate below it cannot enter, so a search
    may skip it. Memory: the k best plus one batch's candidates.

    Example:
        >>> best = TopK(1, 2)
        >>> best.add(torch.tensor([[0.5, 0.25]]), torch.tensor([[4, 5]]))
        >>> best.add(torch.tensor([[0.5]]), torch.tensor([[1]]))
        >>> best.scores, best.indices, best.floor
        (tensor([[0.5000, 0.5000]]), tensor([[1, 4]]), tensor([0.5000]))
    """

    def __init__(self, m: int, k: int) -> None:
        self.k = k
        self.scores, self.indices = empty_result(m, 0)

    def add(self, scores: Tensor, indices: Tensor) -> None:
        self.scores, self.indices = rank(
            torch.cat([self.scores, scores], 1), torch.cat([self.indices, indices], 1), self.k
        )

    @property
    def floor(self) -> Tensor | None:
        return self.scores[:, -1] if self.scores.shape[1] == self.k else None
