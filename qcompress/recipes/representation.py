"""A stored representation of document vectors and how a query is scored against it (the peers' common shape).

`qcompress.recipes.peers` builds the float, PCA, scalar and binary ones, `qcompress.recipes.peers_faiss` the
product-quantization and LSH codes; every one scores a query against all stored documents as a dense (m, n)
matrix, so that ranking goes through `qcompress.search.select_topk` (ties to the lower index) for all of them.

Example:
    >>> import numpy as np
    >>> bits = np.packbits(np.array([[1, 0, 1, 1], [0, 0, 0, 0]], dtype=np.uint8), axis=1)
    >>> hamming_scores(bits[:1], bits).tolist()
    [[-0.0, -3.0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Representation", "cosine", "hamming_scores"]

# Bits set in each byte value: Hamming distances of packed codes by table look-up.
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)


@dataclass
class Representation:
    """How documents are stored and how a query is scored against them."""

    name: str
    bytes_per_vector: float
    documents: Callable[[Tensor], object]  # embeddings (n, dim) -> stored form
    queries: Callable[[Tensor], object]  # embeddings (m, dim) -> query form
    score: Callable[[object, object], Tensor]  # (query form, stored docs) -> (m, n) float scores, higher better
    fitted_parameters: int = 0  # numbers fit on data (PCA components, calibration ranges, codebooks), not trained
    query_precision: str = "float32"  # how the query is held when it is scored (int8, binary, float32...)

    def subset(self, stored: object, index: Sequence[int]) -> object:
        """The stored rows `index` (stored forms are numpy arrays or tensors)."""
        return stored[np.asarray(index)] if isinstance(stored, np.ndarray) else stored[torch.as_tensor(index)]


def cosine(q: Tensor, d: Tensor) -> Tensor:
    """Cosine similarity of every query row with every document row: (m, n)."""
    return F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T


def hamming_scores(q_bits: np.ndarray, d_bits: np.ndarray) -> Tensor:
    """Minus the Hamming distance between packed bit rows: (m, n)."""
    out = np.empty((q_bits.shape[0], d_bits.shape[0]), dtype=np.int32)
    for i, row in enumerate(q_bits):
        out[i] = _POPCOUNT[np.bitwise_xor(d_bits, row)].sum(axis=1)
    return -torch.from_numpy(out).float()
