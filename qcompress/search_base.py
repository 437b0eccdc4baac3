"""What the exact searches share: the top-k tie rule, merging extra candidates, their argument checks, and the
read-ahead of streamed batches.

Every top-k in qcompress (fidelity in `qcompress.search`, cosine in `qcompress.search_cosine`, and whoever ranks
with `select_topk`) orders results by (score desc, index asc), so that equal scores always resolve the same way.

Example:
    >>> select_topk(torch.tensor([[1.0, 3.0, 2.0, 3.0]]), 3)
    (tensor([[3., 3., 2.]]), tensor([[1, 3, 2]]))
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import torch
from torch import Tensor

from qcompress.errors import InputError

__all__ = ["select_topk", "search_workers"]

T = TypeVar("T")
R = TypeVar("R")

UNIT_ROUNDOFF = 2.0**-24  # of float32: the unit of every error margin in the searches
DEFAULT_CHUNK_ELEMENTS = 1 << 22  # numbers per temporary, by default


# -- argument checks ---------------------------------------------------------------------------------------------


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer (the number of results per query), got {k!r}")
    return k


def check_2d(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        hint = "; for a single query use queries[None] or queries.unsqueeze(0)" if x.dim() == 1 else ""
        raise ValueError(f"{name} must be 2-d (rows, qubits), got shape {tuple(x.shape)}{hint}")


def check_finite(x: Tensor, name: str) -> None:
    if x.numel() and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} has {bad} NaN or infinite value(s); every angle must be a finite number")


def check_dims(queries: Tensor, dim: int) -> None:
    if queries.shape[1] != dim:
        raise InputError(
            f"queries have {queries.shape[1]} qubits but the corpus has {dim}; compare embeddings from the same model"
        )


# -- threads ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def search_workers() -> Iterator[Callable[[Callable[[T], R], Iterable[T]], list[R]]]:
    """Yield `run(fn, items) -> [fn(item), ...]`, spread over `torch.get_num_threads()` Python threads, each of
    which runs torch single-threaded; the calling thread runs single-threaded too until the block ends.

    Why: torch's parallel ops use OpenMP, whose threads spin-wait at the end of each op; when another process
    holds a core, every small op waits for a descheduled thread, and a search of thousands of small ops slows by
    one or two orders of magnitude. Here no op is parallel: the parallelism is over independent pieces of work
    (chunks of the corpus), so a busy core only slows the pieces it runs. The setting is per thread (OpenMP and
    MKL keep it per thread) and restored on exit, so nothing else in the process changes.

    Example:
        >>> with search_workers() as run:
        ...     run(lambda x: x * x, [1, 2, 3])
        [1, 4, 9]
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if threads == 1:
            yield lambda fn, items: [fn(item) for item in items]
            return
        with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            yield lambda fn, items: list(pool.map(fn, items))
    finally:
        torch.set_num_threads(threads)


# -- top-k selection with a deterministic tie rule ---------------------------------------------------------------


def rank(scores: Tensor, indices: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k best of each row, ordered by (score desc, index asc). `indices` must be distinct within a row."""
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


# -- angles: validation ---------------------------------------------------------------------------------------


def _float_angles(x: Tensor, name: str, *, require_finite: bool = True) -> Tensor:
    """Float angles as contiguous float32 (other float dtypes are converted: scores are float32)."""
    check_2d(x, name)
    if not x.is_floating_point():
        hint = " (8-bit codes are accepted for the corpus only: pass corpus_codes=True)"
        hint = hint if x.dtype == torch.uint8 else ""
        raise ValueError(f"{name} must hold float angles in radians, got dtype {x.dtype}{hint}")
    x = x.detach().to(torch.float32).contiguous()
    if require_finite:
        check_finite(x, name)
    return x


def _max_abs(x: Tensor, name: str, chunk_elements: int) -> float:
    """Largest |value| of a float tensor, checking that all are finite, a piece of rows at a time."""
    step = max(1, chunk_elements // max(1, x.shape[1]))
    return _largest(name, [_chunk_extent(x[start : start + step], start) for start in range(0, x.shape[0], step)])


def _chunk_extent(part: Tensor, start: int) -> tuple[int | None, float]:
    """(first row of `part` holding a NaN or infinity, counted from `start`, or None; largest |value|)."""
    if part.numel() == 0:
        return None, 0.0
    low, high = torch.aminmax(part)
    largest = max(-float(low), float(high))
    if math.isfinite(largest):  # NaN propagates through aminmax, so a finite extent means every value is finite
        return None, largest
    return start + int((~torch.isfinite(part)).any(1).nonzero()[0]), largest


def _largest(name: str, extents: list[tuple[int | None, float]]) -> float:
    """The largest |value| over the pieces' `_chunk_extent`s; ValueError naming the first row not finite."""
    bad = [row for row, _ in extents if row is not None]
    if bad:
        raise ValueError(f"{name} has NaN or infinite values (first in row {min(bad)}); every angle must be a "
                         "finite number")
    return max((largest for _, largest in extents), default=0.0)


def _check_corpus(corpus: Tensor, corpus_codes: bool, *, require_finite: bool = True) -> Tensor:
    if not corpus_codes:
        if isinstance(corpus, Tensor) and corpus.dtype == torch.uint8:
            raise ValueError("corpus is uint8: if it holds 8-bit angle codes, pass corpus_codes=True")
        return _float_angles(corpus, "corpus", require_finite=require_finite)
    check_2d(corpus, "corpus")
    if corpus.dtype != torch.uint8:
        raise ValueError(
            f"corpus_codes=True expects a uint8 tensor of codes round(theta/pi*255), got dtype {corpus.dtype}"
        )
    return corpus.detach().contiguous()


def _read_ahead(batches: Iterator[T]) -> Iterator[T]:
    """The items of `batches`, each next one read in a background thread while the caller searches the current
    one: Parquet decoding releases the GIL, so reading overlaps the search (measured: see benchmarks/search.py).
    An error while reading is raised when its batch is reached, as without the read-ahead."""
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(next, batches, _END)
        while (item := pending.result()) is not _END:
            pending = reader.submit(next, batches, _END)
            yield item


_END = object()
