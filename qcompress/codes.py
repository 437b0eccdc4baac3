"""Low-bit angle codes: every qubit's angle stored in 1 to 8 bits as the index of one of its own levels, and exact
top-k by log-fidelity on the stored codes (SPEC §7).

A codec (`AngleCodes`) is `bits` (1..8) and, for each of the d qubits, 2^bits levels: float32 angles in [0, pi],
ascending. An angle is coded as the index of its qubit's nearest level (ties to the lower level); a row's d codes
are packed into ceil(d * bits / 8) bytes, least significant bit first (`qcompress.scalar_codes`, whose layout SPEC
§7 states). Fitted levels (`AngleCodes.fit`: per-qubit Lloyd-Max on a sample of the documents' angles) crowd where
a trained head's angles crowd; uniform ones (`AngleCodes.uniform`) waste most codes there (issue 26's probe,
Cranfield nDCG@10 at 4 bits: 0.3895 fitted, 0.3257 uniform).

Score (asymmetric, the default): float32 query angles against the documents' decoded levels,
    score(q, doc) = sum over qubits j of log cos^2((q_j - level_j[code_j]) / 2)     (`quantum.log_cos2_half`)
exactly as `qcompress.search.brute_force_topk(queries, codec.decode(codes), k)` computes it: `topk` returns that
oracle's result, scores bit for bit and ties to the lower index. `symmetric=True` codes and decodes the queries too.

How `topk` is fast. For one query the score is a sum of look-ups in a table T[j, l] = log_cos2_half(q_j - level_jl),
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
exact. Otherwise (many near-ties with the k-th) the query is searched again with 8 times more candidates, until
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
import os
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from qcompress.atomic import atomic_file
from qcompress.errors import InputError
from qcompress.quantum import log_fidelity, log_cos2_half
from qcompress.scalar_codes import check_bits, decode, encode, fit_levels, pack, packed_bytes, unpack
from qcompress.search import search_workers, select_topk

__all__ = ["AngleCodes", "topk", "CODES_FILE", "BIT_ORDER"]

CODES_FILE = "codes.safetensors"  # a codec's file name in a model folder
FORMAT = "qcompress-angle-codes"
FORMAT_VERSION = 1
BIT_ORDER = ("LSB first: the code of qubit j is bits j*b .. j*b+b-1 of the row's bit string, least significant bit "
             "first; bit i of the string is bit (i mod 8) of byte (i div 8), least significant first (numpy "
             "unpackbits(row, bitorder='little')); the unused high bits of the last byte are 0")
DECODING = "angle of qubit j = levels[j][code_j] (float32 radians)"
SCORE = "log-fidelity: sum over qubits j of log cos^2((query_j - angle_j) / 2)"
PI32 = float(torch.tensor(math.pi, dtype=torch.float32))  # pi rounded to float32: the largest angle stored

DEFAULT_CANDIDATES = 64  # faiss candidates per query and shard, before certification (module docstring)
QUERY_BLOCK = 16  # queries per piece of work
MIN_SHARD_ROWS = 1 << 14  # a corpus shard (one faiss index per thread) holds at least this many rows
SHARD_CENTROID_BYTES = 1 << 27  # all shards' 0/1 codebooks together (32 MiB each at 8 bits x 128 qubits)
REGROUP_ROWS = 1 << 15  # rows regrouped for faiss at a time (bits not dividing 8)
_UNIT_ROUNDOFF = 2.0**-24
_WORK_ELEMENTS = 1 << 22  # numbers per temporary when rescoring candidates


def _tensor(x, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    return x.detach().cpu()


def _check_levels(levels, bits: int) -> Tensor:
    levels = _tensor(levels, "levels")
    count = 1 << bits
    if levels.dim() != 2 or levels.shape[0] == 0 or levels.shape[1] != count:
        raise ValueError(f"levels at {bits} bits must have shape (qubits, {count}), got {tuple(levels.shape)}")
    if not levels.is_floating_point():
        raise ValueError(f"levels must be float angles in radians, got dtype {levels.dtype}")
    levels = levels.to(torch.float32).contiguous()
    if not torch.isfinite(levels).all():
        raise ValueError("levels contain NaN or infinite values")
    outside = ((levels < 0) | (levels > PI32)).any(1).nonzero().flatten()
    if outside.numel():
        j = int(outside[0])
        raise ValueError(f"levels must lie within [0, pi]; qubit {j} has {levels[j].tolist()}")
    descending = (levels[:, 1:] < levels[:, :-1]).any(1).nonzero().flatten()
    if descending.numel():
        j = int(descending[0])
        raise ValueError(f"levels must be ascending in each qubit; qubit {j} has {levels[j].tolist()}")
    return levels


class AngleCodes:
    """A low-bit code for the angles of `dim` qubits: `bits` per qubit, `levels` (dim, 2^bits) per qubit.

    Example:
        >>> codec = AngleCodes.uniform(dim=3, bits=2)
        >>> codec.levels[0]
        tensor([0.3927, 1.1781, 1.9635, 2.7489])
        >>> codes = codec.encode(torch.tensor([[0.0, 1.2, 3.1], [2.0, 2.0, 2.0]]))
        >>> codes, codec.bytes_per_vector                 # codes 0, 1, 3 -> 0b11_01_00 (qubit 0 lowest)
        (tensor([[52],
                [42]], dtype=torch.uint8), 1)
        >>> codec.decode(codes)
        tensor([[0.3927, 1.1781, 2.7489],
                [1.9635, 1.9635, 1.9635]])
    """

    def __init__(self, levels: Tensor, bits: int) -> None:
        self.bits = check_bits(bits)
        self.levels = _check_levels(levels, self.bits)

    @property
    def dim(self) -> int:
        """Number of qubits."""
        return self.levels.shape[0]

    @property
    def bytes_per_vector(self) -> int:
        """Bytes of one packed row: ceil(dim * bits / 8)."""
        return packed_bytes(self.dim, self.bits)

    def __repr__(self) -> str:
        return f"AngleCodes(dim={self.dim}, bits={self.bits}, bytes_per_vector={self.bytes_per_vector})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AngleCodes) and self.bits == other.bits and torch.equal(self.levels, other.levels)

    @classmethod
    def fit(cls, angles: Tensor, bits: int, *, seed: int = 0) -> AngleCodes:
        """Per-qubit Lloyd-Max levels of `angles` (N, d) (`scalar_codes.fit_levels`: a seeded sample of at most
        2^18 rows), clipped to [0, pi]. Degenerate data (all angles equal, fewer distinct angles than levels)
        gives repeated levels, which code and decode like one.

        Example:
            >>> angles = torch.tensor([[0.5, 1.0], [0.6, 1.0], [2.0, 1.0], [2.2, 1.0]])
            >>> AngleCodes.fit(angles, bits=1).levels
            tensor([[0.5500, 2.1000],
                    [1.0000, 1.0000]])
        """
        bits = check_bits(bits)
        angles = _check_angles(angles, "angles")
        if angles.shape[0] == 0 or angles.shape[1] == 0:
            raise ValueError(f"levels are fitted on at least one row of at least one qubit, got shape "
                             f"{tuple(angles.shape)}")
        return cls(fit_levels(angles, bits, seed=seed).clamp_(0.0, PI32), bits)

    @classmethod
    def uniform(cls, dim: int, bits: int) -> AngleCodes:
        """Levels at the centres of 2^bits equal cells of [0, pi], the same for every qubit."""
        bits = check_bits(bits)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer (qubits), got {dim!r}")
        count = 1 << bits
        row = ((torch.arange(count, dtype=torch.float64) + 0.5) * (math.pi / count)).to(torch.float32)
        return cls(row.expand(dim, count).contiguous(), bits)

    def encode(self, angles: Tensor) -> Tensor:
        """Angles (N, dim) -> packed codes (N, bytes_per_vector) uint8: each angle's nearest level (ties: the lower)."""
        angles = _check_angles(angles, "angles", self.dim)
        return pack(encode(angles, self.levels), self.bits)

    def decode(self, codes: Tensor) -> Tensor:
        """Packed codes (N, bytes_per_vector) uint8 -> angles (N, dim) float32, the levels the codes name."""
        codes = self.check_codes(codes)
        return decode(unpack(codes, self.bits, self.dim), self.levels)

    def check_codes(self, codes: Tensor, name: str = "codes") -> Tensor:
        """`codes` as a contiguous uint8 tensor (N, bytes_per_vector); ValueError (one line) if it cannot be this
        codec's: another dtype, dimension or width, or a 1 in the unused high bits of the last byte."""
        codes = _tensor(codes, name)
        width = self.bytes_per_vector
        if codes.dtype != torch.uint8 or codes.dim() != 2 or codes.shape[1] != width:
            raise ValueError(f"{name} of {self.dim} qubits at {self.bits} bits are uint8 rows of {width} bytes, got "
                             f"{codes.dtype} of shape {tuple(codes.shape)}")
        used = self.dim * self.bits - 8 * (width - 1)  # bits used in the last byte
        if used < 8 and codes.shape[0]:
            bad = (codes[:, -1] >> used).nonzero().flatten()
            if bad.numel():
                raise ValueError(f"{name} row {int(bad[0])} sets unused bits of its last byte: not packed codes of "
                                 f"{self.dim} qubits at {self.bits} bits")
        return codes.contiguous()

    # -- storage ----------------------------------------------------------------------------------------------------

    def to_metadata(self) -> dict:
        """A JSON-serialisable description that decodes the codes without qcompress (for Parquet key-value metadata).

        Example:
            >>> meta = AngleCodes.uniform(dim=2, bits=1).to_metadata()
            >>> meta["bits"], meta["bytes_per_vector"], meta["levels"]
            (1, 1, [[0.7853981852531433, 2.356194496154785], [0.7853981852531433, 2.356194496154785]])
            >>> AngleCodes.from_metadata(meta) == AngleCodes.uniform(dim=2, bits=1)
            True
        """
        return {"format": FORMAT, "version": FORMAT_VERSION, "bits": self.bits, "dim": self.dim,
                "bytes_per_vector": self.bytes_per_vector, "bit_order": BIT_ORDER, "decoding": DECODING,
                "score": SCORE, "levels": self.levels.tolist()}

    @classmethod
    def from_metadata(cls, meta: dict) -> AngleCodes:
        """The codec that `to_metadata` described; InputError (naming the field) if the description is not one."""
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise InputError(f"not a description of {FORMAT} codes (format {found!r})", field="format")
        if meta.get("version") != FORMAT_VERSION:
            raise InputError(f"{FORMAT} version {meta.get('version')!r} is not supported (this qcompress reads "
                             f"{FORMAT_VERSION})", field="version")
        try:
            codec = cls(torch.tensor(meta.get("levels"), dtype=torch.float32), meta.get("bits"))
        except (TypeError, ValueError, RuntimeError) as err:
            raise InputError(f"not a codec ({err})", field="levels") from None
        if meta.get("dim") != codec.dim:
            raise InputError(f"dim {meta.get('dim')!r} does not match the {codec.dim} rows of levels", field="dim")
        return codec

    def save(self, path: str | os.PathLike) -> None:
        """Write the codec as safetensors (tensor `levels`; bits and the format in its metadata), atomically."""
        meta = {"format": FORMAT, "version": str(FORMAT_VERSION), "bits": str(self.bits), "bit_order": BIT_ORDER,
                "decoding": DECODING, "score": SCORE}
        with atomic_file(path) as tmp:
            save_file({"levels": self.levels}, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> AngleCodes:
        """Read a codec written by `save`; InputError naming the file if it is not one.

        Example:
            >>> import tempfile, pathlib
            >>> path = pathlib.Path(tempfile.mkdtemp()) / CODES_FILE
            >>> AngleCodes.uniform(dim=4, bits=3).save(path)
            >>> AngleCodes.load(path)
            AngleCodes(dim=4, bits=3, bytes_per_vector=2)
        """
        try:
            with safe_open(str(path), framework="pt") as file:
                meta = file.metadata() or {}
                if meta.get("format") != FORMAT or "levels" not in file.keys():
                    raise InputError(f"not a {FORMAT} file (metadata {meta!r})", file=path)
                if meta.get("version") != str(FORMAT_VERSION):
                    raise InputError(f"{FORMAT} version {meta.get('version')!r} is not supported", file=path)
                levels = file.get_tensor("levels")
            return cls(levels, int(meta.get("bits", "")))
        except (SafetensorError, OSError) as err:
            raise InputError(f"not a readable safetensors file ({err})", file=path) from None
        except ValueError as err:  # InputError is one: passed on as it is
            if isinstance(err, InputError):
                raise
            raise InputError(f"not a valid codec ({err})", file=path) from None


def _check_angles(angles, name: str, dim: int | None = None) -> Tensor:
    """Angles as a contiguous float32 tensor (rows, dim), finite; ValueError naming `name` otherwise."""
    angles = _tensor(angles, name)
    if angles.dim() != 2:
        raise ValueError(f"{name} must be 2-d (rows, qubits), got shape {tuple(angles.shape)}")
    if not angles.is_floating_point():
        raise ValueError(f"{name} must be float angles in radians, got dtype {angles.dtype}")
    if dim is not None and angles.shape[1] != dim:
        raise ValueError(f"{name} have {angles.shape[1]} qubits but the codec has {dim}")
    angles = angles.to(torch.float32).contiguous()
    if angles.numel() and not torch.isfinite(angles).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return angles


# -- exact top-k on codes ---------------------------------------------------------------------------------------


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
    before the certificate (module docstring); more only costs rescoring.

    Example:
        >>> codec = AngleCodes.uniform(dim=4, bits=2)
        >>> docs = codec.encode(torch.tensor([[0.4, 0.4, 0.4, 0.4], [2.7, 2.7, 2.7, 2.7], [0.4, 0.4, 0.4, 1.2]]))
        >>> scores, indices = topk(torch.full((1, 4), 0.5), docs, codec, k=2)
        >>> indices
        tensor([[0, 2]])
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer (the number of results per query), got {k!r}")
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"candidates must be a positive integer, got {candidates!r}")
    queries = _check_angles(query_angles, "query_angles", codec.dim)
    codes = codec.check_codes(codes)
    if symmetric:
        queries = codec.decode(codec.encode(queries))
    m, size = queries.shape[0], codes.shape[0]
    k = min(k, size)
    if m == 0 or size == 0:
        return torch.empty(m, k, dtype=torch.float32), torch.empty(m, k, dtype=torch.int64)
    threads = torch.get_num_threads()
    with search_workers() as run:
        return _CodeSearch(codes, codec, threads, run).topk(queries, k, max(candidates, 2 * k))


class _CodeSearch:
    """One `topk` call: the corpus split into shards, each a faiss index over its rows' codes."""

    def __init__(self, codes: Tensor, codec: AngleCodes, threads: int, run) -> None:
        self.codes, self.codec, self.run = codes, codec, run
        self.layout = _Layout.of(codec)
        centroids = self.layout.centroids()
        size = codes.shape[0]
        shards = max(1, min(threads, size // MIN_SHARD_ROWS, SHARD_CENTROID_BYTES // centroids.nbytes))
        step = math.ceil(size / shards)
        self.spans = [(start, min(size, start + step)) for start in range(0, size, step)]
        array = codes.numpy()
        self.indexes = run(lambda span: self.layout.index(array[span[0] : span[1]], centroids), self.spans)
        # Rounding of faiss's sums and of the reference's, relative to (1 + |score|): the module docstring.
        self.margin = (2 * codec.dim + 32) * _UNIT_ROUNDOFF

    def topk(self, queries: Tensor, k: int, wanted: int) -> tuple[Tensor, Tensor]:
        m = queries.shape[0]
        scores, indices = torch.empty(m, k), torch.empty(m, k, dtype=torch.int64)
        pending = torch.arange(m)
        while pending.numel():
            rows = queries[pending]
            found, approx, bound = self._candidates(rows, wanted)
            best, chosen = self._rescore(rows, found, approx, k)
            certified = best[:, -1].double() > bound  # a document left out scores at most `bound`
            scores[pending[certified]], indices[pending[certified]] = best[certified], chosen[certified]
            pending = pending[~certified]
            wanted *= 8
        return scores, indices

    def _upper(self, approx: Tensor) -> Tensor:
        """The most that a document whose faiss score is `approx` can score (float64): the module docstring."""
        approx = approx.double()
        return torch.where(approx > -math.inf, approx + self.margin * (1.0 + approx.abs()), approx)

    def _candidates(self, queries: Tensor, wanted: int) -> tuple[Tensor, Tensor, Tensor]:
        """Corpus rows proposed by faiss (m, C) (-1 for none), their faiss scores (m, C) (-inf for none), and (m,)
        float64: the most that a row not proposed can score (-inf when every row was)."""
        blocks = [(s, min(queries.shape[0], s + QUERY_BLOCK)) for s in range(0, queries.shape[0], QUERY_BLOCK)]
        pieces = [(block, shard) for block in blocks for shard in range(len(self.spans))]
        found = self.run(lambda piece: self._search_piece(queries, *piece, wanted), pieces)
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

    def _rescore(self, queries: Tensor, found: Tensor, approx: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The exact top-k among the candidates `found` (m, C): reference scores, ties to the lower corpus row.

        Only the candidates that can make it are scored: the k best by faiss score, whose k-th exact score is a
        floor, then every other one whose faiss score allows the floor (typically none).
        """
        m, width = found.shape
        scores = torch.full((m, width), -math.inf)
        first = approx.topk(k, dim=1).indices
        rows = torch.arange(m).repeat_interleave(k)
        scores[rows, first.flatten()] = self._exact(queries, rows, found[rows, first.flatten()])
        floor = scores.gather(1, first).amin(1)
        reach = (self._upper(approx) >= floor[:, None].double()) & (scores == -math.inf)
        rows, columns = reach.nonzero(as_tuple=True)
        scores[rows, columns] = self._exact(queries, rows, found[rows, columns])
        # Sorted by corpus row (the missing last), a lower column is a lower row: select_topk's tie rule is ours.
        order = torch.where(found < 0, self.codes.shape[0] + torch.arange(width), found).argsort(1)
        best, local = select_topk(scores.gather(1, order), k)
        return best, found.gather(1, order).gather(1, local)

    def _exact(self, queries: Tensor, rows: Tensor, docs: Tensor) -> Tensor:
        """Reference scores of the pairs (queries[rows], corpus row docs), as `brute_force_topk` computes them."""
        step = max(1, _WORK_ELEMENTS // (8 * self.codec.dim))
        pieces = [(s, min(rows.numel(), s + step)) for s in range(0, rows.numel(), step)]

        def exact(piece: tuple[int, int]) -> Tensor:
            part = slice(*piece)
            return log_fidelity(queries[rows[part]], self.codec.decode(self.codes[docs[part]]))

        parts = self.run(exact, pieces)
        return torch.cat(parts) if parts else torch.empty(0)
