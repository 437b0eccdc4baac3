"""Exact top-k search by log-fidelity (and by cosine), in memory or streamed from Parquet.

Fidelity is not an inner product, so no vector index ranks by it directly, and evaluating log-fidelity for every
(query, document) pair in torch eager costs two orders of magnitude more than a matrix multiply. `FidelityIndex`
makes exact search cost about one matrix multiply by filtering with upper bounds that are inner products (SPEC §2),
then settling the few survivors with the reference formula (`qcompress.quantum.log_cos2_half`, summed over
qubits).

How a search works (m queries, N documents, n qubits, k results):

1. Bound every document with one BLAS matmul. With x_i = cos^2(d_i/2) = (1 + cos a_i cos b_i + sin a_i sin b_i)/2,
   log-fidelity = sum_i log x_i <= n log(mean_i x_i) (Jensen: log is concave), and
   sum_i x_i = (n + <f(q), f(x)>)/2 with f(theta) = [cos theta; sin theta]: one (m, 2n) x (2n, N) matmul.
   This is the tightest bound that depends on the inner product alone: a tangent of log at any x0 (SPEC §2 uses
   x0 = 1, i.e. log x <= x - 1) gives n(log x0 - 1) + S/x0, minimised at x0 = S/n, which is this bound; and as it
   is increasing in the inner product, every tangent ranks documents in the same order. Being tighter, it lets
   through several times fewer candidates than the x0 = 1 tangent on random angles.
2. Seed: the top-C documents by inner product (C = max(k, 128)) are scored exactly; the k-th best of them, L,
   is a lower bound of the true k-th score. A document can only make the top-k if its bound reaches L, i.e. if
   its inner product reaches a threshold t(L). For a query whose (C+1)-th inner product is below t(L), the
   result is certified at once (the usual case when near neighbours exist).
3. Other queries: one pass over the query's inner products selects every document whose bound reaches L
   (instead of doubling C and re-running topk until certified: that takes log2(N/C) passes when the bound is
   loose). These are refined in stages of qubit blocks (16, 16, 32, 64, ... qubits): the qubits done so far are
   bounded almost exactly by log prod_i max(x_i, 2^-7) (one log per 16 qubits; the clamp only raises the bound)
   and the rest by Jensen on their share of the inner product. Each stage drops the documents whose bound falls
   below L; the survivors of the last stage (typically a few per query) get the reference score.
4. The reference scores of the seed and the survivors give the top-k, sorted by (score desc, index asc).

Every bound is compared with a safety margin that covers float32 rounding: the worst-case error of the matmul
(1.1 u n (2n + 8 + R), u = 2^-24, R the largest |a| + |b|), of the per-qubit terms, and of the reference sum
((2n + 32) u relative), so that rounding never drops a document whose reference score reaches the k-th. The
result is therefore exactly the one of `brute_force_topk`: same scores bit for bit (the reference formula is
evaluated per pair, independently of batching) and the same choice among ties (lower index first).

Speed: `benchmarks/search.py` times `FidelityIndex.search` and `topk` against a flat inner-product search over the
same features, and checks that every result equals `brute_force_topk`'s. The refinement shrinks relative to the
matmul as N grows: the k-th score rises and fewer documents can reach it. A flat inner-product search is no
substitute: its top-k is not the fidelity top-k (the benchmark reports its recall).

Alternatives that lost when measured: plain chunked torch eager (`brute_force_topk`), two orders of magnitude
slower than the flat search; torch.compile of the fused per-pair kernel (slow to compile, and not bit-identical to
eager); weighting the qubits in the Jensen bound per query, per document or per block of 16 qubits (fewer
candidates, but more work per pair than it saves). numba was not tried: a fused loop could only speed up the
refinement, which is already cheaper than the matmul at a million documents, and it would be a new dependency.

Contention: the refinement is thousands of small torch ops, and OpenMP's spin-waiting at the end of each parallel
op slowed it by one or two orders of magnitude when another process held a core. So a search runs torch
single-threaded and spreads independent pieces (corpus chunks, pairs) over Python threads instead
(`qcompress.search_base.search_workers`): with one core busy it stays within 2x of the flat search (benchmark).

Memory: the queries' (m, N) inner products, the corpus, its features when cached ((N, 2n) float32, the default
of `FidelityIndex`; `topk` computes them block by block instead), and temporaries bounded by `chunk_elements`.
Nothing of size m * N * n is ever made.

8-bit codes (`corpus_codes=True`): uint8 tensors holding round(theta/pi*255), decoded as float32(code * pi/255),
exactly as `qcompress.quantization.dequantize_angles`; scores are those of the decoded angles.
"""

from __future__ import annotations

import math
import os
import sys

import torch
from torch import Tensor

from qcompress.formats.embeddings import scan_embeddings
from qcompress.quantization import DECODE, decode_codes
from qcompress.quantum import log_cos2_half, pairwise_log_fidelity
from qcompress.search_base import (  # _float_angles is also imported from here by qcompress.ann
    DEFAULT_CHUNK_ELEMENTS,
    UNIT_ROUNDOFF,
    _check_corpus,
    _chunk_extent,
    _float_angles,
    _largest,
    _max_abs,
    _read_ahead,
    append_ragged,
    check_2d,
    check_dims,
    check_k,
    empty_result,
    rank,
    search_workers,
    select_topk,
)
from qcompress.search_cosine import brute_force_topk_cosine, topk_cosine

__all__ = [
    "FidelityIndex",
    "topk",
    "topk_cosine",
    "brute_force_topk",
    "brute_force_topk_cosine",
    "select_topk",
    "decode_codes",
    "search_parquet",
]

PathLike = str | os.PathLike

_BLOCK = 16  # qubits per block: one log per block per pair in the refinement stages
# Lower clamp of each factor x_i inside a block's product: 16 factors stay >= 2^-112, far from float32 underflow.
_CLAMP = 2.0**-7
DEFAULT_CANDIDATES = 128
SCORES_PER_BATCH = 1 << 28  # search_parquet: most (query, document) scores held at once
MIN_BATCH_ROWS = 4096  # ... unless a batch would get fewer rows than this


# -- features and bounds -----------------------------------------------------------------------------------------

# cos and sin of each code's angle (qcompress.quantization.DECODE): the features of 8-bit corpora, by look-up.
_CODE_FEATURES = torch.stack([torch.cos(DECODE), torch.sin(DECODE)], dim=1)
# The features of two neighbouring codes at once, indexed by the pair's bytes read as one 16-bit number (in the
# machine's byte order): half the look-ups, from a 1 MiB table. Measured 1.5x faster than one look-up per code
# (16,384 x 128 codes: 7.8 vs 11.5 ms).
_PAIR = torch.arange(1 << 16)
_FIRST, _SECOND = (_PAIR & 255, _PAIR >> 8) if sys.byteorder == "little" else (_PAIR >> 8, _PAIR & 255)
_PAIR_FEATURES = torch.cat([_CODE_FEATURES[_FIRST], _CODE_FEATURES[_SECOND]], 1).contiguous()
del _PAIR, _FIRST, _SECOND


def _blocks(n: int) -> list[tuple[int, int]]:
    return [(start, min(start + _BLOCK, n)) for start in range(0, n, _BLOCK)]


def _stages(n_blocks: int) -> list[int]:
    """Block counts done after each refinement stage: 1, 2, 4, 8, ... then all (16, 32, 64, ... qubits)."""
    ends, done = [], 1
    while done < n_blocks:
        ends.append(done)
        done *= 2
    return ends + [n_blocks]


def _features(angles: Tensor) -> Tensor:
    """(rows, n) angles -> (rows, 2n) features [cos a0, sin a0, cos a1, sin a1, ...].

    The layout only has to match between queries and documents for the matmul; interleaved, the features of a
    block of qubits are one contiguous slice (what a refinement stage gathers), and cos and sin are written in
    place, with no temporaries.
    """
    out = torch.empty(angles.shape[0], angles.shape[1], 2, dtype=torch.float32)
    torch.cos(angles, out=out[:, :, 0])
    torch.sin(angles, out=out[:, :, 1])
    return out.view(angles.shape[0], -1)


def _code_features(codes: Tensor) -> Tensor:
    """`_features` of 8-bit codes, by table look-up (no cos/sin per element)."""
    rows, n = codes.shape
    if n % 2 == 0 and codes.is_contiguous():
        pairs = codes.view(torch.int16).to(torch.int32).bitwise_and_(0xFFFF)
        return _PAIR_FEATURES.index_select(0, pairs.flatten()).view(rows, -1)
    return _CODE_FEATURES.index_select(0, codes.flatten().to(torch.int32)).view(rows, -1)


class FidelityIndex:
    """Exact top-k search by log-fidelity over a fixed corpus of angles (see the module docstring for how).

    `corpus` is (N, n) float angles, or uint8 codes with `corpus_codes=True`. The index keeps a reference to it
    (no copy for contiguous float32 or uint8) and, with `cache_features=True` (the default), its (N, 2n) float32
    features: 2x the float32 corpus in memory (8x the codes), computed once so that each search is one matmul
    plus a little. With `cache_features=False` they are recomputed a chunk at a time at each search.

    `candidates` is the seed size C (raise it when many queries have more than ~C/2 near neighbours), and
    `chunk_elements` bounds the temporaries. After each search, `last_stats` says how the work went.

    Example:
        >>> corpus = torch.rand(1000, 16) * math.pi
        >>> index = FidelityIndex(corpus)
        >>> scores, indices = index.search(corpus[:2], k=3)
        >>> indices[:, 0].tolist(), scores[:, 0].tolist()
        ([0, 1], [0.0, 0.0])
    """

    def __init__(
        self,
        corpus: Tensor,
        *,
        corpus_codes: bool = False,
        cache_features: bool = True,
        candidates: int = DEFAULT_CANDIDATES,
        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ) -> None:
        for name, value in (("candidates", candidates), ("chunk_elements", chunk_elements)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.codes = bool(corpus_codes)
        self.corpus = _check_corpus(corpus, self.codes, require_finite=False)  # checked below, in pieces
        self.size, self.dim = self.corpus.shape
        if self.dim == 0:
            raise ValueError("corpus has 0 qubits per row; expected angles of shape (N, n) with n >= 1")
        self.candidates, self.chunk_elements = candidates, chunk_elements
        # Largest |angle|: it bounds how far float32 rounding of (a - b) in the reference moves an angle. Checked
        # and measured piece by piece: no temporary as large as the corpus. Without cached features (one-shot
        # search) it is measured during the search's scan, while each chunk is in cache: a separate pass over the
        # corpus cost a quarter of the whole flat search (benchmarks/search.py).
        self.max_abs: float | None = math.pi if self.codes else None
        if self.max_abs is None and cache_features:
            self.max_abs = _max_abs(self.corpus, "corpus", chunk_elements)
        # Elementwise passes work on cache-sized pieces: 2-5x faster than memory-sized ones. The reference formula
        # (a dozen temporaries) is fastest at ~2^17 numbers; refinement stages, with fewer temporaries and more
        # Python overhead per piece, at ~2^20 (2 * 16 features per pair).
        self.work_elements = min(chunk_elements, 1 << 17)
        self.pair_chunk = max(1, min(chunk_elements, 1 << 20) // (2 * _BLOCK))
        # Corpus rows per chunk of the scan: features of 2^21 numbers (8 MiB) are read back by the matmul while
        # still in cache; 2^22 measured 5-10% slower one-shot, 2^19 slower again (per-chunk overhead).
        self.chunk_rows = max(1, min(chunk_elements, 1 << 21) // (2 * self.dim))
        self.features = None
        if cache_features:
            with search_workers() as run:
                parts = run(lambda span: self._corpus_features(*span), self._chunks())
            self.features = torch.cat(parts) if parts else torch.empty(0, 2 * self.dim)
        self.last_stats: dict[str, int] = {}

    def __len__(self) -> int:
        return self.size

    def _chunks(self) -> list[tuple[int, int]]:
        return [(s, min(self.size, s + self.chunk_rows)) for s in range(0, self.size, self.chunk_rows)]

    # The corpus seen as float32 angles or features, a slice of rows or a gathered set of rows at a time.
    def _angles(self, rows: Tensor | slice) -> Tensor:
        part = self.corpus[rows]
        return decode_codes(part) if self.codes else part

    def _corpus_features(self, start: int, end: int) -> Tensor:
        if self.features is not None:
            return self.features[start:end]
        part = self.corpus[start:end]
        return _code_features(part) if self.codes else _features(part)

    def _exact(self, queries: Tensor, rows: Tensor, docs: Tensor) -> Tensor:
        """Reference log-fidelity of the pairs (queries[rows], corpus[docs]), as `pairwise_log_fidelity` computes it."""
        out = torch.empty(rows.numel(), dtype=torch.float32)
        step = max(1, self.work_elements // self.dim)
        for s in range(0, rows.numel(), step):
            r, d = rows[s : s + step], docs[s : s + step]
            out[s : s + r.numel()] = log_cos2_half(queries[r] - self._angles(d)).sum(-1)
        return out

    def _block_cos(self, queries, rows, docs, start, end) -> Tensor:
        """cos(a_i - b_i) for the pairs (rows, docs) and qubits start..end, from the angles.

        Gathering 16 angles a pair and one vectorised cos is cheaper than gathering 32 cached features a pair and
        multiplying them (measured: about 0.7x the time), so the refinement never reads the features.
        """
        doc_angles = self.corpus[:, start:end].index_select(0, docs)
        if self.codes:
            doc_angles = decode_codes(doc_angles)
        return torch.cos(queries[:, start:end].index_select(0, rows) - doc_angles)

    # -- error margins (see the module docstring) --
    def _ip_error(self, max_abs_queries: float) -> float:
        n, r = self.dim, max_abs_queries + self.max_abs
        return 1.1 * UNIT_ROUNDOFF * n * (2 * n + 8 + r)

    def _limit(self, floor: Tensor) -> Tensor:
        """The least computed bound that may still belong to a document scoring `floor` or more.

        A bound B and a floor L (both <= 0) are compared as B + c (1 + |B| + |L|) >= L, with c covering float32
        rounding of the bound and of the reference sum (module docstring); solved for B.
        """
        c = (2 * self.dim + 32) * UNIT_ROUNDOFF
        return (floor - c * (1.0 + floor.abs())) / (1.0 - c)

    def _ip_threshold(self, floor: Tensor, ip_error: float) -> Tensor:
        """Smallest inner product whose Jensen bound can reach `floor` (minus margins), rounded down to float32."""
        n = self.dim
        threshold = 2 * n * torch.exp(self._limit(floor.double()) / n) - n - ip_error
        return torch.nextafter(threshold.float(), torch.tensor(-math.inf))

    def search(self, queries: Tensor, k: int, *, floor: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Exact top-k by log-fidelity: (scores, indices), each (m, min(k, N)), best first, ties to the lower index.

        `floor` (m,) optional: documents scoring below it may be left out (the rows are then only exact above
        it); `search_parquet` passes the running k-th score so that later batches prune more.

        Example:
            >>> index = FidelityIndex(torch.tensor([[0.0, 0.0], [3.0, 3.0], [0.1, 0.0]]))
            >>> index.search(torch.tensor([[0.0, 0.1]]), k=2)[1]
            tensor([[0, 2]])
        """
        k = check_k(k)
        queries = _float_angles(queries, "queries")
        check_dims(queries, self.dim)
        m, size = queries.shape[0], self.size
        k = min(k, size)
        self.last_stats = {"queries": m, "documents": size, "seed_certified": 0, "refined_pairs": 0, "exact_pairs": 0}
        if m == 0 or size == 0:
            return empty_result(m, k)
        with search_workers() as run:
            return self._search(queries, k, floor, run)

    def _search(self, queries: Tensor, k: int, floor: Tensor | None, run) -> tuple[Tensor, Tensor]:
        m, size, stats = queries.shape[0], self.size, self.last_stats
        seed = min(size, max(k, self.candidates))
        if seed == size:  # small corpus: score everything
            self._measure_corpus()
            rows, docs = torch.arange(m).repeat_interleave(size), torch.arange(size).repeat(m)
            stats.update(seed_certified=m, exact_pairs=m * size)
            return select_topk(self._exact_pairs(queries, rows, docs, run).view(m, size), k)
        chunks = self._chunks()
        # 1. Inner products of every document, chunk by chunk, each chunk listing its best `listed` per query (and
        # the next value, which bounds the rest of the chunk). A top-8 costs a quarter of a top-129.
        listed = min(seed, max(8, math.ceil(4 * seed / len(chunks))))
        query_features = _features(queries)
        # Every full chunk's inner products in one allocation: one per chunk, between the features' temporaries,
        # fragmented the heap (peak 2.6x the inner products' size, measured at 1M x 128 codes).
        full = size // self.chunk_rows  # every chunk but a shorter last one
        products = torch.empty(full, m, self.chunk_rows)
        scanned = run(lambda j: self._scan(query_features, chunks[j], listed, products[j] if j < full else None),
                      range(len(chunks)))
        self._measure_corpus([extent for *_, extent in scanned])
        values = torch.cat([v[:, :listed] for _, v, _, _ in scanned], 1)
        listed_docs = torch.cat([d[:, :listed] for _, _, d, _ in scanned], 1)
        beyond = torch.stack([v[:, listed] if v.shape[1] > listed else torch.full((m,), -math.inf)
                              for _, v, _, _ in scanned], 1)
        # 2. The seed (the best listed by inner product) scored exactly: its k-th score is a floor that the final
        # k-th score can only beat.
        seed = min(seed, values.shape[1])
        chosen = values.topk(seed, dim=1).indices
        seed_docs = listed_docs.gather(1, chosen)
        seed_scores = self._exact_pairs(queries, torch.arange(m).repeat_interleave(seed), seed_docs.flatten(),
                                        run).view(m, seed)
        kth = seed_scores.topk(k, dim=1).values[:, -1]
        if floor is not None:
            kth = torch.maximum(kth, floor.to(torch.float32))
        ip_error = self._ip_error(float(queries.abs().max()))
        threshold = self._ip_threshold(kth, ip_error)
        stats["exact_pairs"] = m * seed
        # 3. The pairs outside the seed whose bound reaches the floor: listed ones, then those of the chunks whose
        # next value reaches it; refined in stages, survivors scored exactly.
        outside = values >= threshold[:, None]
        outside.scatter_(1, chosen, False)
        r, c = outside.nonzero(as_tuple=True)
        work = [(None, r, listed_docs[r, c], values[r, c])]
        for j, (ip, _, docs, _) in enumerate(scanned):
            rows = (beyond[:, j] >= threshold).nonzero().flatten()
            if rows.numel():
                work.append(((ip, chunks[j][0], docs[:, :listed]), rows, None, None))
        found = run(lambda item: self._settle(queries, item, threshold, kth, ip_error), work)
        rows = torch.cat([f[0] for f in found])
        docs = torch.cat([f[1] for f in found])
        scores = torch.cat([f[2] for f in found])
        refined = sum(f[3] for f in found)  # pairs refined per row
        stats.update(seed_certified=int((refined == 0).sum()), refined_pairs=int(refined.sum()))
        stats["exact_pairs"] += rows.numel()
        return rank(*append_ragged(seed_scores, seed_docs, rows, docs, scores, sentinel=size), k)

    def _exact_pairs(self, queries: Tensor, rows: Tensor, docs: Tensor, run) -> Tensor:
        """`_exact` over many pairs, its pieces spread over the workers."""
        step = max(1, (1 << 20) // self.dim)
        pieces = [(s, s + step) for s in range(0, rows.numel(), step)]
        parts = run(lambda p: self._exact(queries, rows[p[0] : p[1]], docs[p[0] : p[1]]), pieces)
        return torch.cat(parts) if parts else torch.empty(0)

    def _scan(self, query_features: Tensor, span: tuple[int, int], listed: int, out: Tensor | None = None):
        """A chunk's inner products (m, rows; written to `out` when given), its best `listed` + 1 per query (values,
        corpus indices), and, while the corpus's largest |angle| is unknown, the chunk's (first row not finite or
        None, largest |angle|)."""
        extent = None
        if self.max_abs is None:
            extent = _chunk_extent(self.corpus[span[0] : span[1]], span[0])
        ip = torch.matmul(query_features, self._corpus_features(*span).T, out=out)
        values, local = ip.topk(min(listed + 1, ip.shape[1]), dim=1)
        return ip, values, local + span[0], extent

    def _measure_corpus(self, extents: list | None = None) -> None:
        """Set `max_abs` (checking that every angle is finite) from the scan's chunk extents, or by a pass."""
        if self.max_abs is None:
            self.max_abs = (_max_abs(self.corpus, "corpus", self.chunk_elements) if extents is None
                            else _largest("corpus", extents))

    def _settle(self, queries, item, threshold, floor, ip_error):
        """One piece of step 3: given pairs (chunk None: rows, docs, inner products), or a chunk (its inner
        products, first row, listed docs) and the rows to look at, the pairs whose Jensen bound reaches the row's
        floor (a chunk's listed docs excluded: step 3 has them), refined in stages and the survivors scored
        exactly. Returns (rows, docs, scores, pairs refined per row)."""
        chunk, rows, docs, values = item
        if chunk is not None:
            ip, start, listed = chunk
            sub = ip.index_select(0, rows)
            mask = sub >= threshold[rows, None]
            mask.scatter_(1, listed.index_select(0, rows) - start, False)
            r, d = mask.nonzero(as_tuple=True)
            rows, docs, values = rows[r], d + start, sub[r, d]
        refined = torch.bincount(rows, minlength=threshold.numel())
        kept_rows, kept_docs = [], []
        for s in range(0, rows.numel(), self.pair_chunk):
            piece = slice(s, s + self.pair_chunk)
            kr, kd = self._refine_chunk(queries, rows[piece], docs[piece], values[piece],
                                        floor.index_select(0, rows[piece]), ip_error)
            kept_rows.append(kr)
            kept_docs.append(kd)
        rows = torch.cat(kept_rows) if kept_rows else rows
        docs = torch.cat(kept_docs) if kept_docs else docs
        return rows, docs, self._exact(queries, rows, docs), refined

    def _refine_chunk(self, queries, rows, docs, rest_ip, floor, ip_error) -> tuple[Tensor, Tensor]:
        """Keep the pairs whose staged bound (near-exact on the qubits done, Jensen on the rest) reaches `floor`.

        `rows`, `docs`, `rest_ip` (the pairs' matmul values) and `floor` hold one entry per pair.
        """
        n, blocks = self.dim, _blocks(self.dim)
        # The inner product left = matmul value - sum of the per-qubit cosines done: both errors count.
        rest_error = 2 * ip_error
        # The error of each x_i (module docstring).
        delta = (8 + self.max_abs + float(queries.abs().max())) * UNIT_ROUNDOFF
        limit = self._limit(floor)
        partial = torch.zeros(docs.numel())
        done = 0
        for stage_end in _stages(len(blocks)):
            for start, end in blocks[done:stage_end]:
                cos = self._block_cos(queries, rows, docs, start, end)
                rest_ip -= cos.sum(1)
                # x_i = (1 + cos)/2, raised by its error bound, clamped below: an upper bound of each factor.
                partial += cos.mul_(0.5).add_(0.5 + delta).clamp_min_(_CLAMP).prod(1).log_()
            done = stage_end
            rest = n - blocks[done - 1][1]
            if rest:
                share = (rest_ip + (rest + rest_error)).mul_(0.5 / rest)
                bound = share.clamp_min_(torch.finfo(torch.float32).tiny).log_().mul_(rest).add_(partial)
            else:
                bound = partial
            keep = (bound >= limit).nonzero().flatten()
            if keep.numel() < docs.numel():
                docs, rows, rest_ip, partial, limit = docs[keep], rows[keep], rest_ip[keep], partial[keep], limit[keep]
            if docs.numel() == 0:
                break
        return rows, docs


def topk(
    queries: Tensor,
    corpus: Tensor,
    k: int,
    *,
    corpus_codes: bool = False,
    candidates: int = DEFAULT_CANDIDATES,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Exact top-k by log-fidelity: queries (m, n) float angles x corpus (N, n) -> (scores, indices), (m, min(k, N)).

    Scores are float32 log-fidelities, best first; ties go to the lower corpus index. The result is that of
    `brute_force_topk`, at about the cost of one matmul (module docstring). The corpus features are computed
    block by block and dropped: to search the same corpus repeatedly, build a `FidelityIndex` once.

    Example:
        >>> corpus = torch.tensor([[0.0, 0.0], [3.0, 3.0], [0.1, 0.0]])
        >>> scores, indices = topk(torch.tensor([[0.0, 0.1]]), corpus, 2)
        >>> indices
        tensor([[0, 2]])
    """
    k = check_k(k)
    index = FidelityIndex(
        corpus, corpus_codes=corpus_codes, cache_features=False, candidates=candidates, chunk_elements=chunk_elements
    )
    return index.search(queries, k)


def brute_force_topk(
    queries: Tensor, corpus: Tensor, k: int, *, corpus_codes: bool = False, chunk_rows: int = 65536
) -> tuple[Tensor, Tensor]:
    """Reference for `topk`: `pairwise_log_fidelity` over corpus chunks, top-k per chunk, merged; same tie rule.

    Example:
        >>> brute_force_topk(torch.zeros(1, 2), torch.zeros(3, 2), 2)
        (tensor([[0., 0.]]), tensor([[0, 1]]))
    """
    k = check_k(k)
    queries = _float_angles(queries, "queries")
    corpus = _check_corpus(corpus, corpus_codes)
    check_dims(queries, corpus.shape[1])
    m, size = queries.shape[0], corpus.shape[0]
    best_scores, best_indices = empty_result(m, 0)
    for start in range(0, size, chunk_rows):
        chunk = corpus[start : start + chunk_rows]
        chunk = decode_codes(chunk) if corpus_codes else chunk
        scores, indices = select_topk(pairwise_log_fidelity(queries, chunk, chunk_elements=1 << 17), k)
        best_scores, best_indices = rank(
            torch.cat([best_scores, scores], 1), torch.cat([best_indices, indices + start], 1), k
        )
    return best_scores, best_indices


# -- Parquet corpora larger than memory ---------------------------------------------------------------------------


def search_parquet(
    queries: Tensor,
    path: PathLike,
    k: int,
    *,
    batch_rows: int = 1 << 18,
    candidates: int = DEFAULT_CANDIDATES,
) -> tuple[Tensor, list[list[str]]]:
    """Exact top-k over a qcompress embedding Parquet file or folder, streamed batch by batch (bounded memory).

    Angles (`angles` column, float32 or uint8 codes) are ranked by log-fidelity, vectors (`vectors`) by cosine.
    Returns (scores (m, min(k, N)), ids: one list of document id strings per query), best first; ties go to the
    row that comes first (files in name order), so the result is `topk`'s on the whole dataset read in order.
    Memory: two batches of `batch_rows` rows (the one searched and the next, read ahead), the searched one's
    features and (m, batch_rows) scores, and the ids seen (compactly, to refuse a repeated one). With many queries
    the batches are smaller, so that the scores stay under SCORES_PER_BATCH numbers (1 GiB of float32; 10,000
    queries read 26,843 rows at a time). The file is checked as it is read (`qcompress.formats.scan_embeddings`):
    bad rows and duplicate ids raise `InputError` naming the file, row and id.

    Example:
        >>> import tempfile, pathlib
        >>> from qcompress.formats import EmbeddingWriter
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "emb.parquet"
        >>> with EmbeddingWriter(out, dim=2, metadata={"similarity": "fidelity"}) as w:
        ...     w.write(["a", "b", "c"], torch.tensor([[0.0, 0.0], [3.0, 3.0], [0.1, 0.0]]))
        >>> search_parquet(torch.tensor([[0.0, 0.1]]), out, 2)[1]
        [['a', 'c']]
    """
    k = check_k(k)
    check_2d(queries, "queries")
    # Fewer rows a batch for many queries: the (m, rows) scores stay under SCORES_PER_BATCH numbers.
    batch_rows = min(batch_rows, max(MIN_BATCH_ROWS, SCORES_PER_BATCH // max(1, queries.shape[0])))
    meta, batches = scan_embeddings(path, batch_rows=batch_rows, keep_codes=True, unique=True)
    cosine, codes = meta["column"] == "vectors", meta["encoding"] == "uint8"
    if not cosine:
        queries = _float_angles(queries, "queries")
    check_dims(queries, int(meta["dim"]))
    m = queries.shape[0]
    best_scores, best_positions = empty_result(m, 0)
    id_of: dict[int, str] = {}
    offset = 0
    for batch in _read_ahead(batches):
        ids, values = batch.ids, batch.values
        floor = best_scores[:, -1] if best_scores.shape[1] == k else None
        if cosine:
            scores, local = topk_cosine(queries, values, k)
        else:
            index = FidelityIndex(values, corpus_codes=codes, cache_features=False, candidates=candidates)
            scores, local = index.search(queries, k, floor=floor)
        positions = local + offset
        for position, doc_id in zip(positions.flatten().tolist(), ids.take(local.flatten().numpy()).to_pylist()):
            id_of[position] = doc_id
        best_scores, best_positions = rank(
            torch.cat([best_scores, scores], 1), torch.cat([best_positions, positions], 1), k
        )
        id_of = {p: id_of[p] for p in best_positions.flatten().tolist()}  # only the current winners' ids
        offset += len(values)
    return best_scores, [[id_of[p] for p in row] for row in best_positions.tolist()]
