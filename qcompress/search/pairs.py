"""Exact scores of (query row, document row) pairs: what every exact search and the approximate index's re-ranking
settle their results with.

Log-fidelity is the reference formula, `qcompress.quantum.log_cos2_half` of the angle differences summed over
qubits (as `pairwise_log_fidelity`); 8-bit codes are decoded first (`qcompress.quantization.decode_codes`), and
low-bit codes by their codec (`qcompress.codes.AngleCodes.decode`).
Cosine is one row-wise dot product of the unit query with the normalised document. Each pair's score comes from
elementwise ops and one sum over its own row, so it is the same bit for bit wherever the pair sits in a batch and
however the pairs are cut into pieces or spread over threads: what lets the exact searches equal their
brute-force oracles bit for bit, and a matmul could not (its rounding depends on the blocking).

Memory: temporaries of at most `chunk_elements` numbers (pairs x qubits), whatever the number of pairs.

Example:
    >>> queries, corpus = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0], [2.0, 1.0]])
    >>> log_fidelity_pairs(queries, corpus, torch.tensor([0, 0]), torch.tensor([1, 0]))
    tensor([-1.4924,  0.0000])
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from qcompress.quantization import decode_codes
from qcompress.quantum import log_cos2_half

__all__ = ["log_fidelity_pairs", "cosine_pairs", "score_rows", "spread_pairs", "PAIR_ELEMENTS", "UNIT_ROUNDOFF"]

UNIT_ROUNDOFF = 2.0**-24  # of float32: the unit of every error margin of the exact searches
# Numbers per temporary of the reference formula (a dozen temporaries): cache-sized pieces are the fastest.
PAIR_ELEMENTS = 1 << 17

PairScore = Callable[[Tensor, Tensor], Tensor]  # (query rows, document rows), one entry a pair -> scores


def log_fidelity_pairs(
    queries: Tensor, corpus: Tensor, rows: Tensor, docs: Tensor, *, codes: bool = False,
    decode: Callable[[Tensor], Tensor] | None = None, chunk_elements: int = PAIR_ELEMENTS,
) -> Tensor:
    """Log-fidelity of the pairs (queries[rows], corpus[docs]): float32 angles, or uint8 codes with `codes`, or
    rows that `decode` turns into float32 angles (a low-bit codec's packed rows, `AngleCodes.decode`)."""
    decode = decode_codes if codes else decode

    def score(r: Tensor, d: Tensor) -> Tensor:
        part = corpus[d]
        return log_cos2_half(queries[r] - (part if decode is None else decode(part))).sum(-1)

    return _in_pieces(score, rows, docs, max(1, chunk_elements // max(1, queries.shape[1])))


def unit_vectors(x: Tensor) -> Tensor:
    """The rows of `x` scaled to unit length (zero rows stay zero): `F.normalize`, safe at float32's extremes. A row
    whose norm overflows (values near 3e38) or falls below F.normalize's floor of 1e-12 (values near 1e-30) would
    come out 0 or short; such rows are first divided by their largest |value|, so every nonzero row keeps its
    direction. Other rows are F.normalize's, bit for bit.

    Example:
        >>> unit_vectors(torch.tensor([[3e38, 3e38], [3e-30, 4e-30], [0.0, 0.0]]))
        tensor([[0.7071, 0.7071],
                [0.6000, 0.8000],
                [0.0000, 0.0000]])
    """
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    odd = ~torch.isfinite(norms) | (norms < 1e-12)
    if odd.any():
        largest = x.abs().amax(dim=-1, keepdim=True)
        x = torch.where(odd & (largest > 0), x / largest.clamp_min(torch.finfo(x.dtype).tiny), x)
    return F.normalize(x, dim=-1)


def cosine_pairs(
    unit_queries: Tensor, corpus: Tensor, rows: Tensor, docs: Tensor, *, chunk_elements: int = PAIR_ELEMENTS
) -> Tensor:
    """Cosine of the pairs (unit_queries[rows], corpus[docs]); queries already normalised (`unit_vectors`), so
    that the query side is done once. Zero vectors score 0.

    Example:
        >>> cosine_pairs(torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 4.0]]), torch.tensor([0]), torch.tensor([0]))
        tensor([0.6000])
    """
    def score(r: Tensor, d: Tensor) -> Tensor:
        return (unit_queries[r] * unit_vectors(corpus[d])).sum(-1)

    return _in_pieces(score, rows, docs, max(1, chunk_elements // max(1, corpus.shape[1])))


def _in_pieces(score: PairScore, rows: Tensor, docs: Tensor, step: int) -> Tensor:
    out = torch.empty(rows.numel(), dtype=torch.float32)
    for s in range(0, rows.numel(), step):
        r, d = rows[s : s + step], docs[s : s + step]
        out[s : s + r.numel()] = score(r, d)
    return out


def score_rows(score: PairScore, docs: Tensor) -> Tensor:
    """(m, c) scores of query i with the documents docs[i] ((m, c) indices), from a pair scorer.

    Example:
        >>> score_rows(lambda r, d: (10 * r + d).float(), torch.tensor([[3, 4], [5, 6]]))
        tensor([[ 3.,  4.],
                [15., 16.]])
    """
    m, c = docs.shape
    return score(torch.arange(m).repeat_interleave(c), docs.reshape(-1)).view(m, c)


def spread_pairs(score: PairScore, rows: Tensor, docs: Tensor, run, *, piece: int) -> Tensor:
    """`score(rows, docs)` in pieces of `piece` pairs, spread over `run` (`search_workers`); pieces in order.

    Example:
        >>> spread_pairs(lambda r, d: (r + d).float(), torch.arange(5), torch.ones(5, dtype=torch.long),
        ...              lambda fn, items: [fn(i) for i in items], piece=2)
        tensor([1., 2., 3., 4., 5.])
    """
    pieces = [slice(s, s + piece) for s in range(0, rows.numel(), piece)]
    parts = run(lambda p: score(rows[p], docs[p]), pieces)
    return torch.cat(parts) if parts else torch.empty(0)
