"""Top-k over stored codes a chunk of documents at a time, and leaving a query's own document out of its ranking.

Every method of the bench ranks by the rule of `qcompress.search`: score descending, ties to the lower document
index. Methods that score a dense block of documents (`chunked_topk`) hold only their stored codes for the whole
corpus plus one chunk's scores and decoded rows; the best k of each chunk are merged with the best so far by
`select_topk`, whose tie rule (the lower column) is the lower index because earlier chunks come first.

A pseudo-query made from an evaluated document is ranked against the others only: `leave_out` drops its own
document from a top-(k + 1) list (every method searches one more and drops it), which gives exactly the top k of
the remaining documents.

Example:
    >>> scores = torch.tensor([[0.1, 0.9, 0.9, 0.5], [0.7, 0.2, 0.7, 0.1]])
    >>> chunked_topk(lambda start, end: scores[:, start:end], 4, 2, chunk_rows=3)[1].tolist()
    [[1, 2], [0, 2]]
    >>> values, indices = chunked_topk(lambda start, end: scores[:, start:end], 4, 3, chunk_rows=3)
    >>> leave_out(values, indices, torch.tensor([2, 3]), 2)[1].tolist()
    [[1, 3], [0, 2]]
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from qcompress.search import select_topk

__all__ = ["CHUNK_ROWS", "chunked_topk", "leave_out", "search_excluding"]

CHUNK_ROWS = 4096  # documents scored at once: one chunk's (queries x chunk) scores and decoded rows


def chunked_topk(score_chunk: Callable[[int, int], Tensor], n: int, k: int, *,
                 chunk_rows: int = CHUNK_ROWS) -> tuple[Tensor, Tensor]:
    """(scores, indices), each (m, min(k, n)), best first, ties to the lower index, of `score_chunk(start, end)`:
    the (m, end - start) scores of documents start..end-1, higher better."""
    best: tuple[Tensor, Tensor] | None = None
    for start in range(0, n, chunk_rows):
        values, indices = select_topk(score_chunk(start, min(n, start + chunk_rows)).float(), k)
        indices = indices + start
        if best is not None:
            # Earlier chunks first: among equal scores, the lower column is the lower document index.
            values, indices = torch.cat([best[0], values], dim=1), torch.cat([best[1], indices], dim=1)
            values, position = select_topk(values, k)
            indices = indices.gather(1, position)
        best = values, indices
    if best is None:
        raise ValueError("there are no documents to search")
    return best


def leave_out(values: Tensor, indices: Tensor, exclude: Tensor | None, k: int) -> tuple[Tensor, Tensor]:
    """The first k of each row after removing the document `exclude[row]` (or, in a row that does not list it,
    the last entry, so that every row keeps the same length). `exclude` None: the first k as they are."""
    if exclude is None:
        return values[:, :k], indices[:, :k]
    keep = indices != exclude.reshape(-1, 1).to(indices.device)
    if indices.shape[1]:
        keep[keep.all(dim=1), -1] = False
    m, width = indices.shape[0], indices.shape[1] - 1 if indices.shape[1] else 0
    return values[keep].reshape(m, width)[:, :k], indices[keep].reshape(m, width)[:, :k]


def search_excluding(search: Callable[[int], tuple[Tensor, Tensor]], k: int,
                     exclude: Tensor | None) -> tuple[Tensor, Tensor]:
    """`search(k)` (scores, indices) with each query's `exclude` document left out: one more searched, then
    dropped (`leave_out`)."""
    values, indices = search(k + 1 if exclude is not None else k)
    return leave_out(values, indices, exclude, k)
