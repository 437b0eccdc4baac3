"""What a practitioner would use instead of the quantum head, at equal bytes per vector (issue 5, experiment 4).

Every method here starts from the same pooled encoder outputs (the same encoder, the same texts) and turns them
into stored document vectors of a known size, plus a way to score a query against them:

    float32    the embedding as it is (cosine), 4 bytes per dimension
    float16    the embedding rounded to float16, query and documents (cosine of the rounded vectors), 2d bytes
    truncate   the first d dimensions (cosine), 4d bytes
    pca        PCA to d dimensions of the raw embeddings centred by the mean of the documents being indexed (fit on
               them), cosine of the projections: 4d bytes
    pca-normalised  the same fit on the L2-normalised embeddings (the recipes' `pca` before issue 18; weaker on
               MiniLM: Cranfield test NDCG@10 at d=128, 0.369 against 0.381)
    int8       sentence-transformers' `quantize_embeddings(..., "int8")`, per-dimension ranges calibrated on the
               documents being indexed; query and documents both quantized (int8 query), dot product of the
               codes: d bytes
    int8+rescore   int8 documents, float32 query: dot product of the float query with the int8 codes
               (sentence-transformers' rescoring), d bytes
    binary     `quantize_embeddings(..., "ubinary")` (sign bits packed), Hamming distance: d/8 bytes
    binary+rescore  binary retrieval of the best `rescore_k` documents per query, then the float32 query's dot
               product with the documents' +-1 bits re-ranks them (sentence-transformers' rescoring), d/8 bytes
    pq, opq, lsh   product quantization, OPQ and random-hyperplane LSH codes of `code_bytes` bytes
               (`qcompress.recipes.peers_faiss`)
    pca-scalar PCA to `dim` dimensions + `bits`-bit Lloyd-Max codes per dimension, float32 query
               (`qcompress.recipes.peers_scalar`): ceil(dim * bits / 8) bytes
    rabitq     PCA of the normalised embeddings to `dim` dimensions (default: all, a rotation), then faiss's RaBitQ
               codes of `bits` bits per dimension after a `seed`ed random rotation, float32 query
               (`qcompress.recipes.peers_rabitq`): faiss's code_size, per-vector factors included
    angles     qubit angles (quantum head or plain tanh encoding) by log-fidelity, float32: 4d bytes
    uint8 angles   the same angles stored as 8-bit codes round(theta / pi * 255) (qcompress.formats), d bytes;
               the query stays float32
    uint8 angles+uint8 query   the same codes, the query's angles rounded to them too (like int8's int8 query)
Each representation says in `query_precision` how the query is held when scored (float32, float16, int8, binary),
so that rows at equal document bytes can be compared like for like (issue 17).
Vectors compared by cosine are L2-normalised first (pca: after its projection), as sentence-transformers'
all-MiniLM-L6-v2 pipeline does.

`rank_with` ranks a collection under one protocol (full / judged / rerank) with any of these representations, by
the rules of `qcompress.evaluation.rank` (full ranking: the best `top_k`, ties to the lower index, as
`qcompress.search`); `representation(...)` builds them by name.

Example:
    >>> import torch
    >>> docs, queries = torch.randn(50, 16), torch.randn(3, 16)
    >>> rep = representation("pca", docs, dim=4)
    >>> rep.bytes_per_vector, rep.score(rep.queries(queries), rep.documents(docs)).shape
    (16.0, torch.Size([3, 50]))
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qcompress.errors import InputError
from qcompress.evaluation import Texts
from qcompress.quantization import dequantize_angles, quantize_angles
from qcompress.quantum import pairwise_log_fidelity
from qcompress.recipes.peers_faiss import CODE_METHODS, code_representation
from qcompress.recipes.peers_rabitq import RABITQ_METHOD, rabitq_representation
from qcompress.recipes.peers_scalar import SCALAR_METHOD, scalar_representation
from qcompress.recipes.representation import Representation, cosine, hamming_scores
from qcompress.search import run_from_pools, run_from_topk, select_topk

__all__ = [
    "PEER_METHODS",
    "CODE_METHODS",
    "LOW_BIT_METHODS",
    "ANGLE_METHODS",
    "DEFAULT_RESCORE_K",
    "Representation",
    "representation",
    "quantize",
    "rank_with",
]

PEER_METHODS = ("float32", "float16", "truncate", "pca", "pca-normalised", "int8", "int8+rescore", "binary",
                "binary+rescore")
ANGLE_METHODS = ("angles", "uint8 angles", "uint8 angles+uint8 query")
LOW_BIT_METHODS = (SCALAR_METHOD, RABITQ_METHOD)  # fitted codes of a few bits per dimension, after PCA
DEFAULT_RESCORE_K = 100


def quantize(embeddings: Tensor, precision: str, calibration: Tensor | None = None) -> np.ndarray:
    """sentence-transformers' `quantize_embeddings` (int8 with per-dimension ranges from `calibration`;
    ubinary: packed sign bits)."""
    from sentence_transformers.util.quantization import quantize_embeddings  # where 6.x keeps it

    cal = calibration.detach().cpu().numpy().astype(np.float32) if calibration is not None else None
    return quantize_embeddings(embeddings.detach().cpu().numpy().astype(np.float32), precision,
                               calibration_embeddings=cal)


def _rescored(first: Tensor, exact: Callable[[int, Tensor], Tensor], k: int) -> Tensor:
    """First-stage scores (m, n); the best k of each row get `exact(row, indices)`, placed above all others."""
    out = first.clone()
    k = min(k, first.shape[1])
    if k == 0:
        return out
    top = select_topk(first, k)[1]  # ties at the cut go to the lower index, as everywhere in qcompress
    floor = first.min() - 1.0
    for row in range(first.shape[0]):
        values = exact(row, top[row])
        # Rescored documents rank above every other one: shift them past the row's first-stage maximum.
        shift = (first[row].max() - floor) + 1.0 - values.min()
        out[row, top[row]] = values + shift
    return out


def _angles(method: str, n_dim: int) -> Representation:
    """Angle embeddings by log-fidelity: float32, or the documents as 8-bit codes with the query float32 or
    through the same 8-bit codes (`+uint8 query`)."""
    if method == "angles":
        return Representation(method, 4.0 * n_dim, lambda d: d.float(), lambda q: q.float(),
                              lambda q, d: pairwise_log_fidelity(q, d))

    def codes(e: Tensor) -> Tensor:
        return quantize_angles(e.float())

    def score(q: Tensor, d_codes: Tensor) -> Tensor:
        return pairwise_log_fidelity(q, dequantize_angles(d_codes).float())

    if method == "uint8 angles":
        return Representation(method, float(n_dim), codes, lambda q: q.float(), score)
    return Representation(method, float(n_dim), codes, lambda q: dequantize_angles(codes(q)).float(), score,
                          query_precision="uint8")


def _check_dim(method: str, dim: int | None, n_dim: int) -> int:
    if dim is None or not 0 < dim <= n_dim:
        raise InputError(f"{method} needs 0 < dim <= {n_dim}, got {dim}")
    return dim


def _pca(method: str, reference: Tensor, dim: int) -> Representation:
    """PCA to `dim` dimensions, fit on the reference embeddings centred by their mean: raw (`pca`) or
    L2-normalised first (`pca-normalised`)."""
    def prepare(e: Tensor) -> Tensor:
        return F.normalize(e.double(), dim=-1) if method == "pca-normalised" else e.double()

    x = prepare(reference)
    mean = x.mean(dim=0, keepdim=True)
    # Principal axes from the SVD of the centred reference embeddings (deterministic, exact).
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    components = vh[:dim].T  # (n_dim, dim)

    def project(e: Tensor) -> Tensor:
        return ((prepare(e) - mean) @ components).float()

    return Representation(method, 4.0 * dim, project, project, cosine,
                          fitted_parameters=int(components.numel() + mean.numel()))


def _float16(n_dim: int) -> Representation:
    """Query and documents rounded to float16 (what is stored), compared by cosine in float32."""
    def rounded(e: Tensor) -> Tensor:
        return e.half()

    return Representation("float16", 2.0 * n_dim, rounded, rounded, lambda q, d: cosine(q.float(), d.float()),
                          query_precision="float16")


def _int8(method: str, reference: Tensor) -> Representation:
    """int8 codes of the normalised documents, ranges calibrated on the reference; the query int8 too (`int8`)
    or float32 (`int8+rescore`)."""
    n_dim = int(reference.shape[1])
    unit = F.normalize(reference.float(), dim=-1)
    ranges = 2 * n_dim

    def docs_int8(d: Tensor) -> np.ndarray:
        return quantize(F.normalize(d.float(), dim=-1), "int8", calibration=unit)

    if method == "int8":
        def score(q: np.ndarray, d: np.ndarray) -> Tensor:
            return torch.from_numpy(q.astype(np.int32) @ d.astype(np.int32).T).float()

        return Representation(method, float(n_dim), docs_int8, docs_int8, score, fitted_parameters=ranges,
                              query_precision="int8")

    def score_rescore(q: Tensor, d: np.ndarray) -> Tensor:
        return q @ torch.from_numpy(d.astype(np.float32)).T

    return Representation(method, float(n_dim), docs_int8, lambda q: F.normalize(q.float(), dim=-1),
                          score_rescore, fitted_parameters=ranges)


def _binary(method: str, n_dim: int, rescore_k: int) -> Representation:
    """Packed sign bits by Hamming distance (`binary`), the best `rescore_k` re-ranked by the float query's dot
    product with their +-1 bits (`binary+rescore`)."""
    def docs_bits(d: Tensor) -> np.ndarray:
        return quantize(d.float(), "ubinary")

    if method == "binary":
        return Representation(method, n_dim / 8.0, docs_bits, docs_bits, hamming_scores, query_precision="binary")

    def queries_both(q: Tensor) -> tuple[Tensor, np.ndarray]:
        return F.normalize(q.float(), dim=-1), quantize(q.float(), "ubinary")

    def score_binary_rescore(q: tuple[Tensor, np.ndarray], d: np.ndarray) -> Tensor:
        q_float, q_bits = q
        first = hamming_scores(q_bits, d)
        signs = torch.from_numpy(np.unpackbits(d, axis=1)[:, :n_dim].astype(np.float32) * 2 - 1)
        return _rescored(first, lambda row, idx: signs[idx] @ q_float[row], rescore_k)

    return Representation(method, n_dim / 8.0, docs_bits, queries_both, score_binary_rescore)


def representation(
    method: str,
    reference: Tensor,
    *,
    dim: int | None = None,
    similarity: str = "cosine",
    rescore_k: int = DEFAULT_RESCORE_K,
    code_bytes: int | None = None,
    bits: int | None = None,
    seed: int | None = None,
) -> Representation:
    """Build a representation by name, fit/calibrated on `reference` (the documents' embeddings).

    `method` is one of PEER_METHODS, CODE_METHODS or LOW_BIT_METHODS (for vectors compared by cosine), or one of
    ANGLE_METHODS (for angle embeddings compared by fidelity). `dim` applies to truncate, the PCAs and the low-bit
    methods' PCA, `code_bytes` (bytes per stored vector) to pq, opq and lsh; the others keep the full size. `bits`
    is the bits per dimension of pca-scalar and rabitq, or per sub-quantizer of pq and opq (default 8); `seed` seeds
    the randomised ones (pq, opq, lsh, rabitq).
    """
    n_dim = int(reference.shape[1])
    if method in ANGLE_METHODS:
        return _angles(method, n_dim)
    if similarity != "cosine":
        raise InputError(f"peer method {method!r} compares vectors by cosine, not {similarity}")
    if method == "float32":
        return Representation(method, 4.0 * n_dim, lambda d: d.float(), lambda q: q.float(), cosine)
    if method == "truncate":
        dim = _check_dim(method, dim, n_dim)
        return Representation(method, 4.0 * dim, lambda d: d[:, :dim].float(), lambda q: q[:, :dim].float(),
                              cosine)
    if method == "float16":
        return _float16(n_dim)
    if method in ("pca", "pca-normalised"):
        return _pca(method, reference, _check_dim(method, dim, n_dim))
    if method in ("int8", "int8+rescore"):
        return _int8(method, reference)
    if method in ("binary", "binary+rescore"):
        return _binary(method, n_dim, rescore_k)
    if method in CODE_METHODS:
        return code_representation(method, reference, code_bytes=code_bytes, nbits=bits, seed=seed)
    if method == SCALAR_METHOD:
        return scalar_representation(reference, _pca("pca", reference, _check_dim(method, dim, n_dim)), bits=bits)
    if method == RABITQ_METHOD:
        projection = _pca("pca-normalised", reference, _check_dim(method, n_dim if dim is None else dim, n_dim))
        return rabitq_representation(reference, projection, bits=bits, seed=seed)
    raise InputError(f"unknown method {method!r}; choose one of "
                     f"{', '.join(PEER_METHODS + CODE_METHODS + LOW_BIT_METHODS + ANGLE_METHODS)}")


def _query_rows(q: object, row: int) -> object:
    if isinstance(q, tuple):
        return tuple(_query_rows(part, row) for part in q)
    return q[row : row + 1]


def rank_with(
    rep: Representation, texts: Texts, query_emb: Tensor, doc_emb: Tensor, *, top_k: int = 1000
) -> dict[str, dict[str, float]]:
    """A run {qid: {doc id: score}}: the best `top_k` of the corpus (full; ties to the lower index), or every
    candidate of each query.

    Example:
        >>> texts = Texts(["q1"], ["a query"], ["d1", "d2", "d3"], ["x", "y", "z"], pools=None)
        >>> docs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
        >>> rank_with(representation("float32", docs), texts, torch.tensor([[1.0, 0.0]]), docs, top_k=1)
        {'q1': {'d1': 1.0}}
    """
    if top_k <= 0:
        raise InputError(f"top_k must be positive, got {top_k}")
    stored = rep.documents(doc_emb)
    queries = rep.queries(query_emb)
    if texts.pools is None:
        return run_from_topk(texts.qids, texts.doc_ids, *select_topk(rep.score(queries, stored), top_k))
    return run_from_pools(  # an empty pool ranks nothing: evaluate_run scores that query 0
        texts.qids, texts.doc_ids, texts.pools,
        lambda row, positions: rep.score(_query_rows(queries, row), rep.subset(stored, positions))[0],
    )
