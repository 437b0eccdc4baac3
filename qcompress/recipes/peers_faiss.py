"""Codes of a fixed size from faiss (issue 18, the equal-bytes comparison): product quantization, OPQ and LSH.

    pq     product quantization (Jégou et al., 2011): the L2-normalised vector cut into M = `code_bytes` sub-vectors,
           each stored as one byte, the index of its nearest of 256 centroids (k-means on the documents being
           indexed, as PCA and the int8 ranges are fit); a query is scored by asymmetric distance, the float32
           query's inner product with the documents' reconstructions (what faiss's IndexPQ computes from its
           look-up tables under METRIC_INNER_PRODUCT): M bytes
    opq    the same after an orthogonal rotation fit to the documents (OPQ, Ge et al., 2013; faiss's OPQMatrix);
           the query is rotated too: M bytes
    lsh    random-hyperplane LSH (faiss's IndexLSH: a seeded random rotation to 8 * `code_bytes` directions, one
           sign bit each) of the L2-normalised vector; query hashed the same way, scored by minus the Hamming
           distance: `code_bytes` bytes

No "+rescore" variant of PQ/OPQ/LSH: re-ranking a short list by the exact float32 vectors needs those vectors,
stored beside the codes (1,536 more bytes per MiniLM document), so its bytes per vector would be the float's, not
the code's. (binary+rescore in `qcompress.recipes.peers` re-ranks by the float query against the stored +-1 bits:
no extra bytes. Its PQ analogue, the float query against the stored codes, is the asymmetric distance `pq` already
ranks everything by.)

Example:
    >>> import torch
    >>> docs = torch.randn(300, 16)
    >>> rep = code_representation("pq", docs, code_bytes=8)
    >>> rep.bytes_per_vector, rep.documents(docs).shape, rep.score(rep.queries(docs[:2]), rep.documents(docs)).shape
    (8.0, (300, 8), torch.Size([2, 300]))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qcompress.errors import InputError, require
from qcompress.recipes.representation import Representation, hamming_scores

if TYPE_CHECKING:
    import faiss

__all__ = ["CODE_METHODS", "CODE_BITS", "code_representation"]

CODE_METHODS = ("pq", "opq", "lsh")
CODE_BITS = 8  # bits per PQ sub-quantizer: 256 centroids, one byte per sub-vector (the usual PQ setting)


def _faiss():
    """faiss, imported when a code method is fitted: recipes without one run without it."""
    return require("faiss", "the recipes' PQ, OPQ and LSH baselines", package="faiss-cpu")


def _unit(e: Tensor) -> np.ndarray:
    return np.ascontiguousarray(F.normalize(e.detach().float(), dim=-1).cpu().numpy())


def _trained_pq(x: np.ndarray, m: int) -> faiss.ProductQuantizer:
    pq = _faiss().ProductQuantizer(x.shape[1], m, CODE_BITS)
    # k-means over a corpus of a few thousand documents is below faiss's 39 points per centroid; it trains all the
    # same (every sub-space has n >= 256 points), and saying so once here beats a warning per sub-quantizer.
    pq.cp.min_points_per_centroid = 1
    pq.train(x)
    return pq


def _product_quantization(method: str, reference: Tensor, m: int) -> Representation:
    """PQ (or OPQ) with m one-byte sub-quantizers, trained on the L2-normalised reference."""
    n, n_dim = reference.shape
    if n_dim % m:
        raise InputError(f"{method} cuts {n_dim} dimensions into code_bytes={m} sub-vectors: {m} must divide {n_dim}")
    if n < 2**CODE_BITS:
        raise InputError(f"{method} trains {2**CODE_BITS} centroids per sub-quantizer on the reference documents: "
                         f"needs at least {2**CODE_BITS} of them, got {n}")
    x = _unit(reference)
    rotation = None
    if method == "opq":
        rotation = _faiss().OPQMatrix(n_dim, m)
        rotation.pq = _trained_pq(x, m)  # the rotation's own inner PQ, quiet like the final one
        rotation.train(x)
        x = rotation.apply(x)
    pq = _trained_pq(x, m)

    def rotate(e: Tensor) -> np.ndarray:
        unit = _unit(e)
        return rotation.apply(unit) if rotation is not None else unit

    def documents(d: Tensor) -> np.ndarray:
        return pq.compute_codes(rotate(d))

    def queries(q: Tensor) -> Tensor:
        return torch.from_numpy(rotate(q))

    def score(q: Tensor, codes: np.ndarray) -> Tensor:
        # Asymmetric distance: the float query against each document's reconstruction (sum of its centroids).
        return q @ torch.from_numpy(pq.decode(codes)).T

    fitted = 2**CODE_BITS * n_dim + (n_dim * n_dim if rotation is not None else 0)
    return Representation(method, float(m), documents, queries, score, fitted_parameters=fitted)


def _lsh(reference: Tensor, code_bytes: int) -> Representation:
    """Sign bits of 8 * code_bytes seeded random directions (faiss IndexLSH with a random rotation), Hamming."""
    n_dim = int(reference.shape[1])
    # rotate_data: a random rotation drawn by faiss with a fixed seed; thresholds at 0 (hyperplanes through the
    # origin), so nothing is fit on the documents.
    index = _faiss().IndexLSH(n_dim, 8 * code_bytes, True, False)

    def codes(e: Tensor) -> np.ndarray:
        return index.sa_encode(_unit(e))

    return Representation("lsh", float(code_bytes), codes, codes, hamming_scores, query_precision="binary")


def code_representation(method: str, reference: Tensor, *, code_bytes: int | None) -> Representation:
    """A PQ, OPQ or LSH representation of `code_bytes` bytes per vector, fit on `reference` (the documents)."""
    if method not in CODE_METHODS:
        raise InputError(f"unknown code method {method!r}; choose one of {', '.join(CODE_METHODS)}")
    if code_bytes is None or code_bytes <= 0:
        raise InputError(f"{method} needs code_bytes > 0, got {code_bytes}")
    if method == "lsh":
        return _lsh(reference, int(code_bytes))
    return _product_quantization(method, reference, int(code_bytes))
