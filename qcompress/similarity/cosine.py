"""Cosine similarity of vectors (the paper's classical models).

Example:
    >>> import torch
    >>> Cosine().pairwise(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    tensor([[1., 0.]])
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from qcompress import search
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
        return F.normalize(queries, dim=-1) @ F.normalize(docs, dim=-1).T

    def paired(self, a: Tensor, b: Tensor) -> Tensor:
        return F.cosine_similarity(a, b, dim=-1)

    def topk(self, queries: Tensor, docs: Tensor, k: int) -> tuple[Tensor, Tensor]:
        return search.topk_cosine(queries, docs, k)
