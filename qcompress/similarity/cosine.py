"""Cosine similarity of vectors (the paper's classical models).

Example:
    >>> import torch
    >>> Cosine().pairwise(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    tensor([[1., 0.]])
"""

from __future__ import annotations

from torch import Tensor

from qcompress import search
from qcompress.search.pairs import unit_vectors
from qcompress.errors import InputError
from qcompress.similarity.base import VECTORS, Similarity

__all__ = ["Cosine"]


class Cosine(Similarity):
    """Cosine of vectors (stored as float32 `vectors`); exact top-k by `qcompress.search.topk_cosine`."""

    name = "cosine"
    output_kind = VECTORS
    label = "cosine"
    st_function = "cosine"
    distill_scale = 20.0  # cosines of neighbours differ by a fraction of one

    def pairwise(self, queries: Tensor, docs: Tensor) -> Tensor:
        if queries.shape[-1] != docs.shape[-1]:
            raise InputError(f"vectors have different sizes: {queries.shape[-1]} and {docs.shape[-1]}")
        return unit_vectors(queries) @ unit_vectors(docs).T

    def paired(self, a: Tensor, b: Tensor) -> Tensor:
        return (unit_vectors(a) * unit_vectors(b)).sum(-1)

    def topk(self, queries: Tensor, docs: Tensor, k: int) -> tuple[Tensor, Tensor]:
        return search.topk_cosine(queries, docs, k)
