"""Codes of a fixed size from faiss (issue 18, the equal-bytes comparison): product quantization, OPQ and LSH.

    pq     product quantization (Jégou et al., 2011): the L2-normalised vector cut into M sub-vectors, each stored
           as the index of its nearest of 2^nbits centroids (k-means on the reference documents, as PCA and the
           int8 ranges are fit; nbits 8 by default: M = `code_bytes` sub-vectors of one byte); a query is scored by
           asymmetric distance, the float32 query's inner product with the documents' reconstructions (what faiss's
           IndexPQ computes from its look-up tables under METRIC_INNER_PRODUCT): M * nbits / 8 bytes
    opq    the same after an orthogonal rotation fit to the documents (OPQ, Ge et al., 2013; faiss's OPQMatrix);
           the query is rotated too: M bytes
    lsh    random-hyperplane LSH (faiss's IndexLSH: a seeded random rotation to 8 * `code_bytes` directions, one
           sign bit each) of the L2-normalised vector; query hashed the same way, scored by minus the Hamming
           distance: `code_bytes` bytes

`seed` (None: faiss's fixed defaults) seeds the k-means of PQ and OPQ and LSH's random rotation, so that these
randomised methods can be run over seeds (`qcompress.bench`). Fewer bits per sub-quantizer (`nbits`) let PQ train
on fewer documents: k-means wants ~40 points per centroid, 10,240 for 256 centroids.

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


def _trained_pq(x: np.ndarray, m: int, nbits: int = CODE_BITS, seed: int | None = None) -> faiss.ProductQuantizer:
    pq = _faiss().ProductQuantizer(x.shape[1], m, nbits)
    if seed is not None:
        pq.cp.seed = int(seed)
    # k-means over a corpus of a few thousand documents is below faiss's 39 points per centroid; it trains all the
    # same (every sub-space has n >= 256 points), and saying so once here beats a warning per sub-quantizer.
    pq.cp.min_points_per_centroid = 1
    pq.train(x)
    return pq


def _sub_quantizers(method: str, n_dim: int, code_bytes: int, nbits: int) -> int:
    """M, the number of sub-quantizers of `nbits` bits that make `code_bytes` bytes and cut `n_dim` evenly."""
    if not 1 <= nbits <= 16 or (8 * code_bytes) % nbits:
        raise ValueError(f"{method}: {code_bytes} bytes are not a whole number of {nbits}-bit sub-quantizers "
                         "(nbits 1..16)")
    m = 8 * code_bytes // nbits
    if n_dim % m:
        what = f"code_bytes={code_bytes}" if nbits == CODE_BITS else f"{code_bytes} bytes at {nbits} bits"
        raise InputError(f"{method} cuts {n_dim} dimensions into {what} sub-vectors: {m} must divide {n_dim}")
    return m


def _product_quantization(method: str, reference: Tensor, code_bytes: int, nbits: int,
                          seed: int | None) -> Representation:
    """PQ (or OPQ) with M sub-quantizers of `nbits` bits (M * nbits = 8 * code_bytes), trained on the
    L2-normalised reference."""
    n, n_dim = reference.shape
    m = _sub_quantizers(method, n_dim, code_bytes, nbits)
    if n < 2**nbits:
        raise InputError(f"{method} trains {2**nbits} centroids per sub-quantizer on the reference documents: "
                         f"needs at least {2**nbits} of them, got {n}")
    x = _unit(reference)
    rotation = None
    if method == "opq":
        rotation = _faiss().OPQMatrix(n_dim, m)
        inner = _trained_pq(x, m, nbits, seed)  # the rotation's own inner PQ, quiet like the final one
        rotation.pq = inner
        rotation.train(x)
        x = rotation.apply(x)
    pq = _trained_pq(x, m, nbits, seed)

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

    fitted = 2**nbits * n_dim + (n_dim * n_dim if rotation is not None else 0)
    return Representation(method, float(pq.code_size), documents, queries, score, fitted_parameters=fitted)


def _lsh(reference: Tensor, code_bytes: int, seed: int | None) -> Representation:
    """Sign bits of 8 * code_bytes seeded random directions (faiss IndexLSH with a random rotation), Hamming."""
    n_dim = int(reference.shape[1])
    # rotate_data: a random rotation drawn by faiss (its fixed seed unless `seed` is given); thresholds at 0
    # (hyperplanes through the origin), so nothing is fit on the documents.
    index = _faiss().IndexLSH(n_dim, 8 * code_bytes, True, False)
    if seed is not None:
        index.rrot.init(int(seed))

    def codes(e: Tensor) -> np.ndarray:
        return index.sa_encode(_unit(e))

    return Representation("lsh", float(code_bytes), codes, codes, hamming_scores, query_precision="binary")


def code_representation(method: str, reference: Tensor, *, code_bytes: int | None, nbits: int | None = None,
                        seed: int | None = None) -> Representation:
    """A PQ, OPQ or LSH representation of `code_bytes` bytes per vector, fit on `reference` (the documents);
    `nbits` bits per PQ / OPQ sub-quantizer (default 8), `seed` as the module docstring says."""
    if method not in CODE_METHODS:
        raise InputError(f"unknown code method {method!r}; choose one of {', '.join(CODE_METHODS)}")
    if code_bytes is None or code_bytes <= 0:
        raise InputError(f"{method} needs code_bytes > 0, got {code_bytes}")
    if method == "lsh":
        if nbits not in (None, 1):
            raise ValueError(f"lsh stores one bit per direction, not {nbits}")
        return _lsh(reference, int(code_bytes), seed)
    return _product_quantization(method, reference, int(code_bytes), int(nbits or CODE_BITS), seed)
