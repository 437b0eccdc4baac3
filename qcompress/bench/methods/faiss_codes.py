"""Product quantization, OPQ and LSH through faiss (`qcompress.recipes.peers_faiss`), at B bytes per vector.

    pq, opq   M sub-quantizers of nbits bits, M * nbits = 8 B, M dividing D. k-means wants ~40 fit points per
              centroid (faiss warns below 39), so the bench takes the most bits per sub-quantizer that the fit
              documents support: 8 (256 centroids) from 10,240 of them, 4 (16 centroids) from 640. A budget with no
              such split is refused, and the output says why. Scored by the float32 query's inner product with the
              documents' reconstructions (asymmetric distance), a chunk of codes at a time.
    lsh       8 B random hyperplanes (a seeded random rotation), one sign bit each, Hamming distance.

All three are randomised (k-means initialisation, the rotation): the bench runs them over seeds.

Example:
    >>> pq_split(16, 384, 699), pq_split(128, 384, 699)
    ((32, 4), None)
    >>> pq_split(128, 384, 20_000)
    (128, 8)
"""

from __future__ import annotations

from torch import Tensor

from qcompress.bench.methods.base import FitContext, Fitted, Refusal, RepresentationFitted, Setting
from qcompress.recipes.peers import representation

__all__ = ["PQ", "OPQ", "LSH", "pq_split", "POINTS_PER_CENTROID"]

POINTS_PER_CENTROID = 40
MAX_PQ_BITS = 8


def pq_split(budget: int, dim: int, n_fit: int) -> tuple[int, int] | None:
    """(M, nbits): the most bits per sub-quantizer (<= 8) with M * nbits = 8 * budget, M dividing `dim` and
    POINTS_PER_CENTROID * 2^nbits <= `n_fit`; None when there is none."""
    for nbits in range(MAX_PQ_BITS, 0, -1):
        m, rest = divmod(8 * budget, nbits)
        if not rest and dim % m == 0 and POINTS_PER_CENTROID * 2**nbits <= n_fit:
            return m, nbits
    return None


class _ProductQuantization:
    randomised = True

    def __init__(self, name: str, about: str) -> None:
        self.name, self.about = name, about

    def settings(self, budget: int, dim: int, n_fit: int) -> list[Setting | Refusal]:
        split = pq_split(budget, dim, n_fit)
        if split is None:
            splits = [(8 * budget // b, b) for b in range(MAX_PQ_BITS, 0, -1)
                      if (8 * budget) % b == 0 and dim % (8 * budget // b) == 0]
            fits = ", ".join(f"{m} x {b} bits needs {POINTS_PER_CENTROID * 2**b:,}" for m, b in splits)
            why = (f"{fits} fit documents ({POINTS_PER_CENTROID} per centroid), there are {n_fit:,}" if splits
                   else f"no number of sub-quantizers of 1-8 bits makes {budget} B and divides {dim} dimensions")
            return [Refusal(self.name, budget, why)]
        m, nbits = split
        return [Setting(self.name, (("M", m), ("nbits", nbits)))]

    def fixed(self, dim: int) -> list[Setting]:
        return []

    def fit(self, setting: Setting, fit_pooled: Tensor, seed: int | None, context: FitContext | None) -> Fitted:
        m, nbits = setting.param("M"), setting.param("nbits")
        rep = representation(self.name, fit_pooled, code_bytes=m * nbits // 8, bits=nbits, seed=seed)
        return RepresentationFitted(rep)


class _Lsh:
    name = "lsh"
    randomised = True
    about = "random-hyperplane LSH (faiss IndexLSH, seeded rotation), Hamming distance"

    def settings(self, budget: int, dim: int, n_fit: int) -> list[Setting | Refusal]:
        return [Setting(self.name, (("bits", 8 * budget),))]

    def fixed(self, dim: int) -> list[Setting]:
        return []

    def fit(self, setting: Setting, fit_pooled: Tensor, seed: int | None, context: FitContext | None) -> Fitted:
        return RepresentationFitted(representation("lsh", fit_pooled, code_bytes=setting.param("bits") // 8,
                                                   seed=seed))


PQ = _ProductQuantization("pq", "product quantization (faiss), float32 query against the reconstructions")
OPQ = _ProductQuantization("opq", "PQ after OPQ's fitted rotation (faiss), float32 query")
LSH = _Lsh()
