"""Exact top-k by log-fidelity over angles in memory: `FidelityIndex`, `topk`, and their oracle `brute_force_topk`.

Fidelity is not an inner product, so no vector index ranks by it directly, and evaluating log-fidelity for every
(query, document) pair in torch eager costs far more than a matrix multiply. `FidelityIndex` makes exact search
cost about one matrix multiply by filtering with upper bounds that are inner products (SPEC §2), then settling the
few survivors with the reference formula (`qcompress.quantum.log_cos2_half` summed over qubits, in
`qcompress.search.pairs`). The features f below are `qcompress.search.features`.

How a search works (m queries, N documents, n qubits, k results):

1. Bound every document with one BLAS matmul. With x_i = cos^2(d_i/2) = (1 + cos a_i cos b_i + sin a_i sin b_i)/2,
   log-fidelity = sum_i log x_i <= n log(mean_i x_i) (Jensen: log is concave), and
   sum_i x_i = (n + <f(q), f(x)>)/2 with f(theta) = [cos theta; sin theta]: one (m, 2n) x (2n, N) matmul.
   This is the tightest bound that depends on the inner product alone: a tangent of log at any x0 (SPEC §2 uses
   x0 = 1, i.e. log x <= x - 1) gives n(log x0 - 1) + S/x0, minimised at x0 = S/n, which is this bound; and as it
   is increasing in the inner product, every tangent ranks documents in the same order. Being tighter, it lets
   through fewer candidates than the x0 = 1 tangent.
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
4. The reference scores of the seed and the survivors give the top-k, sorted by (score desc, index asc)
   (`qcompress.search.selection`: the tie rule of every top-k).

Every bound is compared with a safety margin that covers float32 rounding: the worst-case error of the matmul
(1.1 u n (2n + 8 + R), u = 2^-24, R the largest |a| + |b|), of the per-qubit terms, and of the reference sum
((2n + 32) u relative), so that rounding never drops a document whose reference score reaches the k-th. The
result is therefore exactly the one of `brute_force_topk`: same scores bit for bit (the reference formula is
evaluated per pair, independently of batching) and the same choice among ties (lower index first).

Speed: `benchmarks/search.py` times `FidelityIndex.search` and `topk` against a flat inner-product search over the
same features, and checks that every result equals `brute_force_topk`'s. The refinement shrinks relative to the
matmul as N grows: the k-th score rises and fewer documents can reach it. A flat inner-product search is no
substitute: its top-k is not the fidelity top-k (the benchmark reports its recall).

Alternatives that lost when measured: plain chunked torch eager (`brute_force_topk`), far slower than the flat
search; torch.compile of the fused per-pair kernel (slow to compile, and not bit-identical to eager); weighting the
qubits in the Jensen bound per query, per document or per block of 16 qubits (fewer candidates, but more work per
pair than it saves). numba was not tried: a fused loop could only speed up the refinement, which is already
cheaper than the matmul on large corpora, and it would be a new dependency.

Contention: the refinement is thousands of small torch ops, and OpenMP's spin-waiting at the end of each parallel
op slows them badly when another process holds a core. So a search runs torch single-threaded and spreads
independent pieces (corpus chunks, pairs) over Python threads instead (`qcompress.search.workers.search_workers`);
`benchmarks/search.py` times it idle and with one core busy.

Memory: the queries' (m, N) inner products, the corpus, its features when cached ((N, 2n) float32, the default
of `FidelityIndex`; `topk` computes them block by block instead), and temporaries bounded by `chunk_elements`.
Nothing of size m * N * n is ever made.

8-bit codes (`corpus_codes=True`): uint8 tensors holding round(theta/pi*255), decoded as float32(code * pi/255),
exactly as `qcompress.quantization.dequantize_angles`; scores are those of the decoded angles.

Corpora larger than memory are streamed from Parquet, a batch at a time through this index, by
`qcompress.search.stream.search_parquet`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from qcompress.quantization import decode_codes
from qcompress.quantum import pairwise_log_fidelity
from qcompress.search.checks import (
    check_corpus,
    check_dims,
    check_k,
    check_positive,
    chunk_extent,
    float_angles,
    largest_extent,
    max_abs,
)
from qcompress.search.features import features_of
from qcompress.search.pairs import PAIR_ELEMENTS, UNIT_ROUNDOFF, log_fidelity_pairs, score_rows, spread_pairs
from qcompress.search.selection import TopK, append_ragged, empty_result, rank, select_topk
from qcompress.search.workers import DEFAULT_CHUNK_ELEMENTS, search_workers

__all__ = ["FidelityIndex", "topk", "brute_force_topk", "DEFAULT_CANDIDATES"]

_BLOCK = 16  # qubits per block: one log per block per pair in the refinement stages
# Lower clamp of each factor x_i inside a block's product: 16 factors stay >= 2^-112, far from float32 underflow.
_CLAMP = 2.0**-7
DEFAULT_CANDIDATES = 128


def _blocks(n: int) -> list[tuple[int, int]]:
    return [(start, min(start + _BLOCK, n)) for start in range(0, n, _BLOCK)]


def _stages(n_blocks: int) -> list[int]:
    """Block counts done after each refinement stage: 1, 2, 4, 8, ... then all (16, 32, 64, ... qubits)."""
    ends, done = [], 1
    while done < n_blocks:
        ends.append(done)
        done *= 2
    return ends + [n_blocks]


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
        check_positive("candidates", candidates)
        check_positive("chunk_elements", chunk_elements)
        self.codes = bool(corpus_codes)
        self.corpus = check_corpus(corpus, self.codes, require_finite=False)  # checked below, in pieces
        self.size, self.dim = self.corpus.shape
        if self.dim == 0:
            raise ValueError("corpus has 0 qubits per row; expected angles of shape (N, n) with n >= 1")
        self.candidates, self.chunk_elements = candidates, chunk_elements
        # Largest |angle|: it bounds how far float32 rounding of (a - b) in the reference moves an angle. Checked
        # and measured piece by piece: no temporary as large as the corpus. Without cached features (one-shot
        # search) it is measured during the search's scan, while each chunk is in cache: a separate pass over the
        # corpus costs a good share of a whole flat search (benchmarks/search.py).
        self.max_abs: float | None = math.pi if self.codes else None
        if self.max_abs is None and cache_features:
            self.max_abs = max_abs(self.corpus, "corpus", chunk_elements)
        # Elementwise passes work on cache-sized pieces, much faster than memory-sized ones. The reference formula
        # (a dozen temporaries) is fastest at ~2^17 numbers (PAIR_ELEMENTS); refinement stages, with fewer
        # temporaries and more Python overhead per piece, at ~2^20 (2 * 16 features per pair).
        self.work_elements = min(chunk_elements, PAIR_ELEMENTS)
        self.pair_chunk = max(1, min(chunk_elements, 1 << 20) // (2 * _BLOCK))
        # Corpus rows per chunk of the scan: features of 2^21 numbers (8 MiB) are read back by the matmul while
        # still in cache; 2^22 measured slower one-shot, 2^19 slower again (per-chunk overhead).
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

    def _corpus_features(self, start: int, end: int) -> Tensor:
        if self.features is not None:
            return self.features[start:end]
        return features_of(self.corpus[start:end], codes=self.codes)

    def _exact(self, queries: Tensor, rows: Tensor, docs: Tensor) -> Tensor:
        """Reference log-fidelity of the pairs (queries[rows], corpus[docs]), as `pairwise_log_fidelity` computes it."""
        return log_fidelity_pairs(queries, self.corpus, rows, docs, codes=self.codes, chunk_elements=self.work_elements)

    def _block_cos(self, queries, rows, docs, start, end) -> Tensor:
        """cos(a_i - b_i) for the pairs (rows, docs) and qubits start..end, from the angles.

        Gathering 16 angles a pair and one vectorised cos measured cheaper than gathering 32 cached features a pair
        and multiplying them, so the refinement never reads the features.
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
        queries = float_angles(queries, "queries")
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
            stats.update(seed_certified=m, exact_pairs=m * size)
            return select_topk(self._exact_rows(queries, torch.arange(size).expand(m, size), run), k)
        chunks = self._chunks()
        # 1. Inner products of every document, chunk by chunk, each chunk listing its best `listed` per query (and
        # the next value, which bounds the rest of the chunk). A short top-k costs much less than a long one.
        listed = min(seed, max(8, math.ceil(4 * seed / len(chunks))))
        query_features = features_of(queries)
        # Every full chunk's inner products in one allocation: one per chunk, between the features' temporaries,
        # fragmented the heap (a peak of several times the inner products' size, measured).
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
        seed_scores = self._exact_rows(queries, seed_docs, run)
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

    def _exact_rows(self, queries: Tensor, docs: Tensor, run) -> Tensor:
        """`_exact` of query i with the documents docs[i] ((m, c) indices), in pieces spread over the workers."""
        def spread(rows: Tensor, flat_docs: Tensor) -> Tensor:
            return spread_pairs(lambda r, d: self._exact(queries, r, d), rows, flat_docs, run,
                                piece=max(1, (1 << 20) // self.dim))

        return score_rows(spread, docs)

    def _scan(self, query_features: Tensor, span: tuple[int, int], listed: int, out: Tensor | None = None):
        """A chunk's inner products (m, rows; written to `out` when given), its best `listed` + 1 per query (values,
        corpus indices), and, while the corpus's largest |angle| is unknown, the chunk's (first row not finite or
        None, largest |angle|)."""
        extent = None
        if self.max_abs is None:
            extent = chunk_extent(self.corpus[span[0] : span[1]], span[0])
        ip = torch.matmul(query_features, self._corpus_features(*span).T, out=out)
        values, local = ip.topk(min(listed + 1, ip.shape[1]), dim=1)
        return ip, values, local + span[0], extent

    def _measure_corpus(self, extents: list | None = None) -> None:
        """Set `max_abs` (checking that every angle is finite) from the scan's chunk extents, or by a pass."""
        if self.max_abs is None:
            self.max_abs = (max_abs(self.corpus, "corpus", self.chunk_elements) if extents is None
                            else largest_extent("corpus", extents))

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
    """Reference for `topk`: `pairwise_log_fidelity` over corpus chunks, top-k per chunk, merged (`TopK`).

    Example:
        >>> brute_force_topk(torch.zeros(1, 2), torch.zeros(3, 2), 2)
        (tensor([[0., 0.]]), tensor([[0, 1]]))
    """
    k = check_k(k)
    queries = float_angles(queries, "queries")
    corpus = check_corpus(corpus, corpus_codes)
    check_dims(queries, corpus.shape[1])
    best = TopK(queries.shape[0], k)
    for start in range(0, corpus.shape[0], chunk_rows):
        chunk = corpus[start : start + chunk_rows]
        chunk = decode_codes(chunk) if corpus_codes else chunk
        scores, indices = select_topk(pairwise_log_fidelity(queries, chunk, chunk_elements=1 << 17), k)
        best.add(scores, indices + start)
    return best.scores, best.indices
