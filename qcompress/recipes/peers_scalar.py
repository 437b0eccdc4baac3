"""PCA + per-dimension scalar codes (issue 24): the classical twin of the quantum head's low-bit angle codes.

    pca-scalar   PCA to `dim` dimensions of the raw embeddings centred by the reference's mean mu (the `pca` peer of
                 `qcompress.recipes.peers`), each coordinate stored at `bits` bits as the index of its nearest of
                 2^bits Lloyd-Max levels fitted on the reference's coordinates (`qcompress.scalar_codes`), a row's
                 codes packed into ceil(dim * bits / 8) bytes. A document's reconstruction is the embedding its
                 codes stand for, r = mu + P c (P the dim principal axes, c its levels); the float32 query q scores
                 <q, r> / (|q| |r|), the cosine of q and r: for a unit q, (<q, mu> + <P^T q, c>) / |r| with
                 |r|^2 = |mu|^2 + 2 <P^T mu, c> + |c|^2: no D-dimensional vector per document is ever made.

Scoring the reconstruction, not the centred coordinates, is what makes the method converge to the encoder's own
ranking (all dimensions, many bits: the exact cosine). The cosine of the centred coordinates, nz(P^T (q - mu)) .
nz(c) (`reconstruct=False`, the feasibility probe's variant in ../shared/docs/frontier-probe.md) ranks by another
similarity: on Cranfield, fit on half and evaluated on the other half, in float32 it keeps 0.77 of the encoder's
top 10 at 128 dimensions where the reconstruction keeps 0.89, and 0.79 at all 384 dimensions (1.0 for the
reconstruction); its NDCG@10 is no better (0.4204 against 0.4238 at 128 dimensions).

Stored bytes per vector: ceil(dim * bits / 8). Fitted numbers (fixed size, not per vector): the mean and the dim
principal axes (dim * D + D) plus the levels (dim * 2^bits).

Example:
    >>> import torch
    >>> from qcompress.recipes.peers import representation
    >>> docs = torch.randn(200, 16, generator=torch.Generator().manual_seed(0)) + 1.0
    >>> rep = scalar_representation(docs, representation("pca", docs, dim=8), bits=2)
    >>> stored = rep.documents(docs)
    >>> rep.bytes_per_vector, tuple(stored.shape), stored.dtype
    (2.0, (200, 2), torch.uint8)
    >>> full = scalar_representation(docs, representation("pca", docs, dim=16), bits=8)
    >>> exact = torch.nn.functional.normalize(docs[:3], dim=-1) @ torch.nn.functional.normalize(docs, dim=-1).T
    >>> bool((full.score(full.queries(docs[:3]), full.documents(docs)) - exact).abs().max() < 0.05)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from qcompress.errors import InputError
from qcompress.recipes.representation import Representation, cosine
from qcompress.scalar_codes import check_bits, decode, encode, fit_levels, pack, packed_bytes, unpack

__all__ = ["SCALAR_METHOD", "scalar_representation"]

SCALAR_METHOD = "pca-scalar"


def scalar_representation(reference: Tensor, projection: Representation, *, bits: int | None,
                          reconstruct: bool = True) -> Representation:
    """`bits`-bit Lloyd-Max codes of each coordinate of `projection` (the `pca` representation of
    `qcompress.recipes.peers`, fitted on `reference`), the levels fitted on the reference's coordinates; scored by
    the cosine of the query and the reconstruction (or, `reconstruct=False`, of the centred coordinates).

    `qcompress.recipes.peers.representation("pca-scalar", reference, dim=..., bits=...)` builds both.
    """
    if bits is None:
        raise InputError(f"{SCALAR_METHOD} needs bits (1..8 per dimension)")
    bits = check_bits(bits)
    project = projection.documents  # x -> P^T (x - mu), a linear map plus a constant
    coordinates = project(reference)
    dim = int(coordinates.shape[1])
    levels = fit_levels(coordinates, bits)  # (dim, 2^bits)
    mean = reference.double().mean(dim=0).float()  # mu, as the projection centres
    mean_axes = -project(torch.zeros(1, reference.shape[1]))[0]  # P^T mu: the projection of 0 is -P^T mu
    mean_norm2 = float(mean.double().square().sum())

    def documents(e: Tensor) -> Tensor:
        return pack(encode(project(e), levels), bits)

    def queries(q: Tensor) -> tuple[Tensor, Tensor]:
        # (P^T q, <q, mu>) of the unit query: its share of <q, r> = <q, mu> + <P^T q, c>.
        q = F.normalize(q.float(), dim=-1)
        return project(q) + mean_axes, q @ mean

    def score(q: tuple[Tensor, Tensor], packed: Tensor) -> Tensor:
        # The levels of just these rows (a chunk of the corpus when searched chunk by chunk).
        c = decode(unpack(packed, bits, dim), levels)
        norm = (mean_norm2 + 2 * (c @ mean_axes) + c.square().sum(dim=1)).clamp_min(1e-30).sqrt()
        return (q[1][:, None] + q[0] @ c.T) / norm[None, :]

    def score_centred(q: Tensor, packed: Tensor) -> Tensor:
        return cosine(q, decode(unpack(packed, bits, dim), levels))

    fitted = projection.fitted_parameters + int(levels.numel())
    if not reconstruct:
        return Representation(SCALAR_METHOD, float(packed_bytes(dim, bits)), documents, project, score_centred,
                              fitted_parameters=fitted)
    return Representation(SCALAR_METHOD, float(packed_bytes(dim, bits)), documents, queries, score,
                          fitted_parameters=fitted)
