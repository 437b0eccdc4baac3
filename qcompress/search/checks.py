"""The argument checks of the searches: one message for each mistake, whichever search meets it (tests match them).

Angles are checked to be finite (a NaN would silently rank last, or first); a corpus that may be large is checked
a piece of rows at a time (`max_abs`, or `chunk_extent` per piece while a search scans it), never with a
temporary as large as itself.

Example:
    >>> check_k(0)
    Traceback (most recent call last):
    ...
    qcompress.errors.InputError: k must be a positive integer (the number of results per query), got 0
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from qcompress.errors import InputError

__all__ = [
    "check_k",
    "check_positive",
    "check_2d",
    "check_finite",
    "check_dims",
    "float_angles",
    "check_corpus",
    "max_abs",
    "chunk_extent",
    "largest_extent",
]


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer (the number of results per query), got {k!r}")
    return k


def check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value


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


def float_angles(x: Tensor, name: str, *, require_finite: bool = True) -> Tensor:
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


def check_corpus(corpus: Tensor, corpus_codes: bool, *, require_finite: bool = True) -> Tensor:
    """A corpus of float angles (as `float_angles`) or, with `corpus_codes`, of uint8 codes (contiguous)."""
    if not corpus_codes:
        if isinstance(corpus, Tensor) and corpus.dtype == torch.uint8:
            raise ValueError("corpus is uint8: if it holds 8-bit angle codes, pass corpus_codes=True")
        return float_angles(corpus, "corpus", require_finite=require_finite)
    check_2d(corpus, "corpus")
    if corpus.dtype != torch.uint8:
        raise ValueError(
            f"corpus_codes=True expects a uint8 tensor of codes round(theta/pi*255), got dtype {corpus.dtype}"
        )
    return corpus.detach().contiguous()


def max_abs(x: Tensor, name: str, chunk_elements: int) -> float:
    """Largest |value| of a float tensor, checking that all are finite, a piece of rows at a time."""
    step = max(1, chunk_elements // max(1, x.shape[1]))
    return largest_extent(name, [chunk_extent(x[start : start + step], start) for start in range(0, x.shape[0], step)])


def chunk_extent(part: Tensor, start: int) -> tuple[int | None, float]:
    """(first row of `part` holding a NaN or infinity, counted from `start`, or None; largest |value|)."""
    if part.numel() == 0:
        return None, 0.0
    low, high = torch.aminmax(part)
    largest = max(-float(low), float(high))
    if math.isfinite(largest):  # NaN propagates through aminmax, so a finite extent means every value is finite
        return None, largest
    return start + int((~torch.isfinite(part)).any(1).nonzero()[0]), largest


def largest_extent(name: str, extents: list[tuple[int | None, float]]) -> float:
    """The largest |value| over the pieces' `chunk_extent`s; ValueError naming the first row not finite."""
    bad = [row for row, _ in extents if row is not None]
    if bad:
        raise ValueError(f"{name} has NaN or infinite values (first in row {min(bad)}); every angle must be a "
                         "finite number")
    return max((largest for _, largest in extents), default=0.0)
