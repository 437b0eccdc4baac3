"""Exact top-k by log-fidelity on low-bit angle codes (`qcompress.codes.AngleCodes`, SPEC §7): `CodeIndex`, built
once over a corpus's packed codes and searched as often as needed, and `topk`, one search.

The score (asymmetric, the default) is float32 query angles against the documents' decoded levels,
    score(q, doc) = sum over qubits j of log cos^2((q_j - level_j[code_j]) / 2)     (`quantum.log_cos2_half`)
exactly as `qcompress.search.brute_force_topk(queries, codec.decode(codes), k)` computes it: a search returns that
oracle's result, scores bit for bit (the candidates are settled by `pairs.log_fidelity_pairs`, the reference
formula) and ties to the lower index (`selection`). `symmetric=True` codes and decodes the queries too. With a
`floor` (the running k-th score of a corpus searched in batches, `selection.TopK`), documents below it may be left
out: `qcompress.search.stream.search_parquet` searches code files so.

How it is fast. For one query the score is a sum of look-ups in a table T[j, l] = log_cos2_half(q_j - level_jl),
which is what a product quantizer's scan does. faiss's `IndexPQ` (inner product) scores a code as the sum over
sub-quantizers m of <x_m, centroid_m[code_m]>; with 0/1 centroids that is a sum of entries of the query vector x,
so with x = T (flattened) faiss scans our codes. Each 8-bit sub-quantizer covers g = floor(8 / bits) qubits, whose
codes are g * bits contiguous bits of the packed row: the centroid of byte value c has a 1 at t * 2^bits + (code
of qubit t in c) for each of its g qubits, so faiss's table entry for c is the sum of those qubits' terms and a
document costs one look-up per group. When bits divide 8 (1, 2, 4, 8) the groups are the stored bytes, and the
scan is exactly that of a PQ code of as many bytes; otherwise (3, 5, 6, 7 bits: 64, 128, 128, 128 groups for 48,
80, 96, 112 bytes at 128 qubits) each shard's rows are regrouped into bytes first (`_Layout.regroup`).

faiss adds in its own order, so its scores S' differ from the reference S by rounding, at most (2n + 32) u
(1 + |S'|) (u = 2^-24: each side sums n terms <= 0 in some order, (n - 1) u sum|term|, and the terms of the two
sides differ by a few u relative; measured at most 14 u (1 + |S'|) at n = 128). Each query asks faiss for C
candidates per corpus shard (C = max(candidates, 2k)); a document it did not return has S' at most the shard's
C-th S', hence S at most that plus the margin. The candidates that can reach the top-k are scored with the
reference formula (the k best by S', then any other whose S' plus the margin reaches their k-th exact score); if
the k-th best exact score beats every shard's bound, no other document can reach the top-k and the result is
exact (with a `floor`, also when the floor beats every bound: what was left out could not enter). Otherwise (many near-ties with the k-th) the query is searched again with 8 times more candidates, until
certified or every document is a candidate. Work is spread over `search_workers` threads in (query block, corpus
shard) pieces, each running faiss single-threaded: one query uses every thread, and a busy core only slows the
pieces it runs.

Speed: benchmarks/codes_search.py times `topk` against faiss `IndexPQ` (M = bytes of a code, 8 bits) exhaustive
search over the same rows, same threads. On 2 cores shared with other engineers (noisy), 200,000 rows of 128
qubits x 4 bits, 100 queries, top-10: 1.11x IndexPQ's time idle, 1.11x with one core busy (1.14x and 1.22x in a
run under heavier load). At other widths (100,000 rows, 50 queries, IndexPQ of as many bytes): 1.3x at 1, 2 and 8
bits, 2.1-2.7x at 3, 5, 6, 7 bits (the regrouping, and 64 or 128 look-ups per row where IndexPQ does 48-112).
Alternatives measured and dropped: table look-ups in torch (`index_select` of the byte tables, then a sum), 24x
IndexPQ's time; faiss's generic `nbits` decoder for 3, 5, 6, 7 bits (it reads our layout as it is, one qubit per
sub-quantizer), 6-15x; faiss's tables through BLAS with several OpenMP threads, slower than the scan itself on a
shared machine (spin-waits), hence one thread per piece. faiss's 4-bit fast scan (`IndexPQFastScan`) scanned 6x
faster than IndexPQ, but it rounds the tables to 8 bits in ways internal to faiss, which a certificate would have
to trust: left for later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from qcompress.codes import AngleCodes, check_angles
from qcompress.quantum import log_cos2_half
from qcompress.search.checks import check_k, check_positive
from qcompress.search.pairs import UNIT_ROUNDOFF, log_fidelity_pairs, spread_pairs
from qcompress.search.selection import empty_result, select_topk
from qcompress.search.workers import search_workers

__all__ = ["CodeIndex", "topk", "DEFAULT_CANDIDATES"]

DEFAULT_CANDIDATES = 64  # faiss candidates per query and shard, before certification (module docstring)
QUERY_BLOCK = 16  # queries per piece of work
MIN_SHARD_ROWS = 1 << 14  # a corpus shard (one faiss index per thread) holds at least this many rows
SHARD_CENTROID_BYTES = 1 << 27  # all shards' 0/1 codebooks together (32 MiB each at 8 bits x 128 qubits)
REGROUP_ROWS = 1 << 15  # rows regrouped for faiss at a time (bits not dividing 8)
PAIR_PIECE_ELEMENTS = 1 << 22  # numbers (pairs x qubits) per piece of the rescoring spread over the threads


@dataclass(frozen=True)
class _Layout:
    """How faiss sees a codec's rows: one byte (an 8-bit sub-quantizer) per group of `group` = floor(8 / bits)
    qubits, `subquantizers` of them; a sub-quantizer's slice of the query vector holds its qubits' tables, `width`
    = group * 2^bits numbers. When bits divide 8, these bytes are the packed rows themselves."""

    bits: int
    group: int
    subquantizers: int
    width: int

    @classmethod
    def of(cls, codec: AngleCodes) -> _Layout:
        group = 8 // codec.bits
        return cls(codec.bits, group, math.ceil(codec.dim / group), group << codec.bits)

    def centroids(self) -> np.ndarray:
        """(M, 256, width) 0/1: byte value c of a sub-quantizer picks, for each qubit t of its group, entry
        t * 2^bits + (bits t*b .. t*b+b-1 of c) of its slice of the query vector."""
        levels, values = 1 << self.bits, np.arange(256)
        one = np.zeros((256, self.width), np.float32)
        for t in range(self.group):
            one[values, t * levels + ((values >> (t * self.bits)) & (levels - 1))] = 1.0
        return np.ascontiguousarray(np.broadcast_to(one, (self.subquantizers, *one.shape)))

    def regroup(self, packed: np.ndarray) -> np.ndarray:
        """Packed rows -> (rows, M) bytes: byte i holds bits i*g*b .. (i+1)*g*b - 1 of the row's bit string, the
        codes of qubits i*g .. i*g + g - 1 (a group's codes are contiguous in the string, LSB first)."""
        span = self.group * self.bits
        if span == 8:
            return packed
        padded = np.zeros((packed.shape[0], packed.shape[1] + 1), np.uint8)  # a group may end in the last byte
        padded[:, :-1] = packed
        start = np.arange(self.subquantizers) * span
        pairs = padded[:, start // 8].astype(np.uint16) | (padded[:, start // 8 + 1].astype(np.uint16) << 8)
        return ((pairs >> (start % 8).astype(np.uint16)) & ((1 << span) - 1)).astype(np.uint8)

    def index(self, codes: np.ndarray, centroids: np.ndarray):
        """A faiss IndexPQ (inner product, 8-bit sub-quantizers) over packed `codes`, with the codebooks
        `centroids`."""
        import faiss  # here: importing faiss takes a while, and only the search needs it

        index = faiss.IndexPQ(self.subquantizers * self.width, self.subquantizers, 8, faiss.METRIC_INNER_PRODUCT)
        faiss.copy_array_to_vector(centroids.ravel(), index.pq.centroids)
        index.is_trained = True
        for start in range(0, codes.shape[0], REGROUP_ROWS):
            index.add_sa_codes(self.regroup(codes[start : start + REGROUP_ROWS]))
        return index

    def query_vectors(self, queries: Tensor, levels: Tensor) -> np.ndarray:
        """(m, M * width) float32: T[j, l] = log_cos2_half(q_j - level_jl), qubit-major, zero for padding qubits."""
        tables = log_cos2_half(queries[:, :, None] - levels[None])  # (m, d, 2^bits), every value finite
        pad = self.subquantizers * self.group - levels.shape[0]
        if pad:
            tables = torch.nn.functional.pad(tables, (0, 0, 0, pad))
        return tables.reshape(queries.shape[0], -1).numpy()


def _faiss_single_thread(search):
    """Run `search()` with faiss single-threaded in this thread (the parallelism is over pieces), then restore."""
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return search()
    finally:
        faiss.omp_set_num_threads(previous)


def topk(query_angles: Tensor, codes: Tensor, codec: AngleCodes, k: int, *, symmetric: bool = False,
         candidates: int = DEFAULT_CANDIDATES) -> tuple[Tensor, Tensor]:
    """Exact top-k by log-fidelity of float angles (m, d) against packed codes (N, bytes): (scores, indices), each
    (m, min(k, N)), float32 and int64, best first, ties to the lower index: the result of
    `qcompress.search.brute_force_topk(query_angles, codec.decode(codes), k)`, scores bit for bit. With
    `symmetric=True`, that of the coded and decoded queries. `candidates`: faiss candidates per query and shard
    before the certificate (module docstring); more only costs rescoring. To search one corpus several times,
    build its `CodeIndex` once.

    Example:
        >>> from qcompress.codes import AngleCodes
        >>> codec = AngleCodes.uniform(dim=4, bits=2)
        >>> docs = codec.encode(torch.tensor([[0.4, 0.4, 0.4, 0.4], [2.7, 2.7, 2.7, 2.7], [0.4, 0.4, 0.4, 1.2]]))
        >>> scores, indices = topk(torch.full((1, 4), 0.5), docs, codec, k=2)
        >>> indices
        tensor([[0, 2]])
    """
    check_k(k)
    check_positive("candidates", candidates)
    check_angles(query_angles, "query_angles", codec.dim)  # before the index is built
    return CodeIndex(codes, codec).search(query_angles, k, symmetric=symmetric, candidates=candidates)


class CodeIndex:
    """A corpus of packed codes made ready for exact top-k once: split into shards (one per thread, each at least
    MIN_SHARD_ROWS rows), each a faiss index over its rows (regrouped into one byte per group of qubits when bits
    do not divide 8). Memory: the codes twice (the tensor given, and faiss's copy).

    Example:
        >>> from qcompress.codes import AngleCodes
        >>> codec = AngleCodes.uniform(dim=4, bits=2)
        >>> index = CodeIndex(codec.encode(torch.tensor([[0.4] * 4, [2.7] * 4, [0.4, 0.4, 0.4, 1.2]])), codec)
        >>> index.search(torch.full((1, 4), 0.5), 2)[1], index.search(torch.full((1, 4), 2.5), 1)[1]
        (tensor([[0, 2]]), tensor([[1]]))
    """

    def __init__(self, codes: Tensor, codec: AngleCodes) -> None:
        self.codec, self.codes = codec, codec.check_codes(codes)
        self.layout = _Layout.of(codec)
        centroids = self.layout.centroids()
        size = self.codes.shape[0]
        shards = max(1, min(torch.get_num_threads(), size // MIN_SHARD_ROWS, SHARD_CENTROID_BYTES // centroids.nbytes))
        step = max(1, math.ceil(size / shards))
        self.spans = [(start, min(size, start + step)) for start in range(0, size, step)]
        array = self.codes.numpy()
        with search_workers() as run:
            self.indexes = run(lambda span: self.layout.index(array[span[0] : span[1]], centroids), self.spans)
        # Rounding of faiss's sums and of the reference's, relative to (1 + |score|): the module docstring.
        self.margin = (2 * codec.dim + 32) * UNIT_ROUNDOFF

    def __len__(self) -> int:
        return self.codes.shape[0]

    def search(self, query_angles: Tensor, k: int, *, symmetric: bool = False, floor: Tensor | None = None,
               candidates: int = DEFAULT_CANDIDATES) -> tuple[Tensor, Tensor]:
        """`topk` of `query_angles` (m, d) over this corpus. `floor` (m,) optional: documents scoring below it may
        be left out (the rows are then exact above it: what a search merging batches with `TopK` needs)."""
        check_k(k)
        check_positive("candidates", candidates)
        queries = check_angles(query_angles, "query_angles", self.codec.dim)
        if symmetric:
            queries = self.codec.decode(self.codec.encode(queries))
        m, size = queries.shape[0], len(self)
        k = min(k, size)
        if m == 0 or size == 0:
            return empty_result(m, k)
        floor = None if floor is None else floor.to(torch.float64)
        with search_workers() as run:
            return self._topk(queries, k, max(candidates, 2 * k), floor, run)

    def _topk(self, queries: Tensor, k: int, wanted: int, floor: Tensor | None, run) -> tuple[Tensor, Tensor]:
        scores, indices = empty_result(queries.shape[0], k)
        pending = torch.arange(queries.shape[0])
        while pending.numel():
            rows = queries[pending]
            found, approx, bound = self._candidates(rows, wanted, run)
            best, chosen = self._rescore(rows, found, approx, k, run)
            certified = best[:, -1].double() > bound  # a document left out scores at most `bound`
            if floor is not None:
                certified |= floor[pending] > bound  # ... below the floor: it cannot enter the merged top-k
            scores[pending[certified]], indices[pending[certified]] = best[certified], chosen[certified]
            pending = pending[~certified]
            wanted *= 8
        return scores, indices

    def _upper(self, approx: Tensor) -> Tensor:
        """The most that a document whose faiss score is `approx` can score (float64): the module docstring."""
        approx = approx.double()
        return torch.where(approx > -math.inf, approx + self.margin * (1.0 + approx.abs()), approx)

    def _candidates(self, queries: Tensor, wanted: int, run) -> tuple[Tensor, Tensor, Tensor]:
        """Corpus rows proposed by faiss (m, C) (-1 for none), their faiss scores (m, C) (-inf for none), and (m,)
        float64: the most that a row not proposed can score (-inf when every row was)."""
        blocks = [(s, min(queries.shape[0], s + QUERY_BLOCK)) for s in range(0, queries.shape[0], QUERY_BLOCK)]
        pieces = [(block, shard) for block in blocks for shard in range(len(self.spans))]
        found = run(lambda piece: self._search_piece(queries, *piece, wanted), pieces)
        shards = len(self.spans)
        by_block = [found[b * shards : (b + 1) * shards] for b in range(len(blocks))]

        def joined(i: int) -> Tensor:  # the shards side by side, the blocks one under the other
            return torch.cat([torch.cat([piece[i] for piece in block], 1) for block in by_block])

        rows, approx = joined(0), joined(1)
        return rows, approx.masked_fill_(rows < 0, -math.inf), joined(2).amax(1)

    def _search_piece(self, queries: Tensor, block: tuple[int, int], shard: int, wanted: int):
        """faiss's candidates for a block of queries in a shard: rows, faiss scores, (block, 1) bound."""
        start, end = self.spans[shard]
        count = min(wanted, end - start)
        vectors = self.layout.query_vectors(queries[block[0] : block[1]], self.codec.levels)
        values, rows = _faiss_single_thread(lambda: self.indexes[shard].search(vectors, count))
        values, rows = torch.from_numpy(values), torch.from_numpy(rows)
        if count == end - start:  # every row of the shard proposed
            bound = torch.full((rows.shape[0], 1), -math.inf, dtype=torch.float64)
        else:
            bound = self._upper(values[:, -1:])
        return torch.where(rows >= 0, rows + start, rows), values, bound

    def _rescore(self, queries: Tensor, found: Tensor, approx: Tensor, k: int, run) -> tuple[Tensor, Tensor]:
        """The exact top-k among the candidates `found` (m, C): reference scores, ties to the lower corpus row.

        Only the candidates that can make it are scored: the k best by faiss score, whose k-th exact score is a
        floor, then every other one whose faiss score allows the floor (typically none).
        """
        m, width = found.shape
        scores = torch.full((m, width), -math.inf)
        first = approx.topk(k, dim=1).indices
        rows = torch.arange(m).repeat_interleave(k)
        scores[rows, first.flatten()] = self._exact(queries, rows, found[rows, first.flatten()], run)
        floor = scores.gather(1, first).amin(1)
        reach = (self._upper(approx) >= floor[:, None].double()) & (scores == -math.inf)
        rows, columns = reach.nonzero(as_tuple=True)
        scores[rows, columns] = self._exact(queries, rows, found[rows, columns], run)
        # Sorted by corpus row (the missing last), a lower column is a lower row: select_topk's tie rule is ours.
        order = torch.where(found < 0, len(self) + torch.arange(width), found).argsort(1)
        best, local = select_topk(scores.gather(1, order), k)
        return best, found.gather(1, order).gather(1, local)

    def _exact(self, queries: Tensor, rows: Tensor, docs: Tensor, run) -> Tensor:
        """Reference scores of the pairs (queries[rows], corpus row docs), as `brute_force_topk` computes them."""
        return spread_pairs(
            lambda r, d: log_fidelity_pairs(queries, self.codes, r, d, decode=self.codec.decode),
            rows, docs, run, piece=max(1, PAIR_PIECE_ELEMENTS // (8 * self.codec.dim)))


