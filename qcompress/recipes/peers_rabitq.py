"""RaBitQ codes through faiss (issue 24): the strongest 1-4 bit quantizer with per-vector correction factors.

    rabitq   the L2-normalised embedding x, its coordinates c = P^T (x - mu) on the `dim` principal axes P of the
             reference's normalised embeddings centred by their mean mu (the `pca-normalised` peer of
             `qcompress.recipes.peers`; dim = the full width is a rotation), turned by a seeded random rotation
             (RaBitQ's random orthogonal transform: faiss's RandomRotationMatrix, what its index factory's "RR"
             adds before "RaBitQ") and coded by faiss's `IndexRaBitQ(dim, METRIC_INNER_PRODUCT, bits)` (Gao & Long,
             SIGMOD 2024; extended to several bits per dimension), which estimates inner products. The query's
             unit vector q is projected without the centring, P^T q, rotated the same way and kept in float32
             (faiss's query-bits setting `qb` = 0: no query quantization; faiss's default, 4, quantizes it). As
             x ~ mu + P c, the cosine <q, x> ~ <q, mu> + <P^T q, c>, whose first term is the same for every
             document: RaBitQ's estimate of <P^T q, c> ranks by the cosine (exactly, up to the codes, at dim = D).

Stored bytes per vector: faiss's `code_size`, which includes RaBitQ's per-vector factors (8 bytes at 1 bit,
20 bytes at 2-4 bits, on top of ceil(dim / 8) * bits): what a user stores. Fitted numbers (fixed size): the PCA
(mean and axes), the rotation (dim^2) and RaBitQ's centroid (dim).

Example:
    >>> import torch
    >>> from qcompress.recipes.peers import representation
    >>> docs = torch.randn(300, 32, generator=torch.Generator().manual_seed(0))
    >>> rep = rabitq_representation(docs, representation("pca-normalised", docs, dim=16), bits=1, seed=0)
    >>> stored = rep.documents(docs)
    >>> rep.bytes_per_vector, stored.shape, rep.score(rep.queries(docs[:2]), stored).shape
    (10.0, (300, 10), torch.Size([2, 300]))
    >>> code_size(16, 1), code_size(384, 4)
    (10, 212)
"""

from __future__ import annotations

import faiss
import numpy as np
import torch
from torch import Tensor

from qcompress.errors import InputError
from qcompress.recipes.representation import Representation

__all__ = ["RABITQ_METHOD", "RABITQ_BITS", "QUERY_BITS", "code_size", "rabitq_representation"]

RABITQ_METHOD = "rabitq"
RABITQ_BITS = (1, 2, 4)
QUERY_BITS = 0  # faiss's qb: 0 keeps the query in float32, as every other method here does


def code_size(dim: int, bits: int) -> int:
    """Stored bytes of one vector of `dim` dimensions at `bits` bits: faiss's own `code_size`."""
    return int(faiss.IndexRaBitQ(int(dim), faiss.METRIC_INNER_PRODUCT, int(bits)).code_size)


def _search_params() -> faiss.RaBitQSearchParameters:
    params = faiss.RaBitQSearchParameters()
    params.qb = QUERY_BITS
    return params


def rabitq_representation(reference: Tensor, projection: Representation, *, bits: int | None,
                          seed: int | None) -> Representation:
    """RaBitQ codes of `bits` bits per dimension of `projection` (the `pca-normalised` representation fitted on
    `reference`), after a random rotation seeded by `seed` (None: 0)."""
    if bits not in RABITQ_BITS:
        raise InputError(f"{RABITQ_METHOD} codes {', '.join(map(str, RABITQ_BITS))} bits per dimension, not {bits}")
    project = projection.documents  # x -> P^T (normalised x - mu): linear in the normalised x, plus a constant
    origin = project(torch.zeros(1, reference.shape[1]))  # -P^T mu (the normalisation leaves 0 at 0)
    dim = int(origin.shape[1])
    rotation = faiss.RandomRotationMatrix(dim, dim)
    rotation.init(int(seed or 0))

    def rotated(x: Tensor) -> np.ndarray:
        return rotation.apply(np.ascontiguousarray(x.float().numpy()))

    trained = faiss.IndexRaBitQ(dim, faiss.METRIC_INNER_PRODUCT, int(bits))
    trained.train(rotated(project(reference)))  # RaBitQ's centroid

    def documents(d: Tensor) -> np.ndarray:
        return trained.sa_encode(rotated(project(d)))

    def queries(q: Tensor) -> np.ndarray:
        return rotated(project(q) - origin)  # P^T q of the unit query: the projection without the centring

    def score(q: np.ndarray, codes: np.ndarray) -> Tensor:
        # faiss estimates the inner products of a set of codes through an index holding them: a copy of the trained
        # index over just these rows (a chunk of the corpus when searched chunk by chunk), every row returned.
        index = faiss.clone_index(trained)
        index.add_sa_codes(codes)
        n = codes.shape[0]
        values, rows = index.search(q, n, params=_search_params())
        out = torch.full((q.shape[0], n), -torch.inf)
        return out.scatter_(1, torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(values))

    fitted = projection.fitted_parameters + dim * dim + dim
    return Representation(RABITQ_METHOD, float(trained.code_size), documents, queries, score,
                          fitted_parameters=fitted)
