"""Approximate top-k by log-fidelity for corpora beyond exact search: an inverted-file index (faiss IVF) over the
[cos θ; sin θ] features proposes candidates, and each candidate is re-ranked by the exact log-fidelity.

Why this works: the inner product of the features is the sum of cos(a_i - b_i), whose Jensen bound ranks documents
(SPEC §2, `qcompress.search.fidelity`); documents close by fidelity are close by inner product, so the IVF's
cells around a query hold its fidelity neighbours. The IVF stores the features (`qcompress.search.features`) as
8-bit scalar codes (faiss `SQ8`: 2n bytes a document), looks at `nprobe` cells per query and returns its best
`rerank` documents by (approximate) inner product; those are scored with the reference formula
(`qcompress.search.pairs.log_fidelity_pairs`, as the exact search does) and the best k kept, ties to the lower
row. Nothing guarantees the true top-k is among the candidates: `recall_at_k` measures it against the exact
search, and `qcompress score --index` reports it with every run.

An index is a folder, written atomically by `build_index` from an embedding Parquet file (or folder):
    index.json     format, the corpus's qcompress metadata, number of rows, nlist, the faiss factory string, the
                   source (its path, rows and the digest of its Parquet footers), and the digest of ids.arrow
    ivf.faiss      the faiss index (faiss's own binary format; nothing is unpickled): by default IVF with 8-bit
                   scalar codes, any faiss index-factory layout with `build_index(factory=...)` (`--factory`)
    values.npy     the stored angles (float32 or uint8 codes, (rows, n); low-bit codes packed, (rows, bytes)),
                   memory-mapped when searching (a plain numeric array: read with allow_pickle=False)
    ids.arrow      Arrow IPC: the `id` of each row (unique: `build_index` refuses a corpus with a duplicate)

A file of low-bit codes (SPEC §7) is indexed by the features of its decoded angles, and the candidates re-ranked
by the exact score on the codes (float32 query angles against their levels), as `qcompress.codes.topk` scores.

What opening an index checks (`ApproximateIndex`): index.json whole (each field there, of its type), ids.arrow by
its digest, the rows of ids, values and IVF against index.json; and the corpus it was built from, when that path
still exists, by its rows and the digest of its Parquet footers (row counts, sizes, statistics and the qcompress
metadata, read without the data): a corpus compressed again from other documents is refused, naming both. A
corpus that is gone is not needed (the index holds the ids and values it searches). Not read whole on every open,
as that would cost more than the searches: values.npy and ivf.faiss (their shapes are checked), and the corpus's
data pages (a rewrite that kept every footer byte, the same ids' range, sizes and value range, would pass).

Example:
    >>> import tempfile, pathlib
    >>> from qcompress.formats import EmbeddingWriter
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> corpus = torch.rand(2000, 16) * math.pi
    >>> with EmbeddingWriter(folder / "c.parquet", dim=16, metadata={"similarity": "fidelity"}) as w:
    ...     w.write([f"d{i}" for i in range(2000)], corpus)
    >>> index = build_index(folder / "c.parquet", folder / "c.index", nlist=8)
    >>> scores, ids = ApproximateIndex(folder / "c.index").search(corpus[:2], 3, nprobe=8)
    >>> [row[0] for row in ids]
    ['d0', 'd1']
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from qcompress.atomic import atomic_dir
from qcompress.errors import InputError, MissingDependency, json_loads
from qcompress.integrity import bytes_digest, file_digest
from qcompress.formats.embeddings import codec_of, count_embedding_rows, read_embedding_metadata, scan_embeddings
from qcompress.search.checks import check_dims, check_k, check_positive, float_angles
from qcompress.search.codes import CodeIndex
from qcompress.search.features import angle_features, features_of
from qcompress.search.fidelity import FidelityIndex
from qcompress.search.pairs import log_fidelity_pairs, spread_pairs
from qcompress.search.selection import TopK, rank
from qcompress.search.workers import search_workers

__all__ = ["build_index", "ApproximateIndex", "recall_at_k", "IndexInfo", "FORMAT", "DEFAULT_RERANK",
           "DEFAULT_FACTORY", "corpus_footprint"]

FORMAT = 2  # 1: no digests (refused: build the index again)
DEFAULT_RERANK = 100  # candidates re-ranked exactly per query
# The faiss index-factory string of the index over the 2n features; {nlist} becomes the number of IVF cells.
DEFAULT_FACTORY = "IVF{nlist},SQ8"
NO_CELLS_TRAIN = 256  # without IVF cells: k-means training rows as for 256 cells (a PQ's codebooks have 256 entries)
TRAIN_PER_LIST = 40  # k-means training rows per IVF cell (faiss warns below 39)
BATCH_ROWS = 1 << 16
PathLike = str | os.PathLike


def _faiss():
    try:
        import faiss
    except ImportError:
        raise MissingDependency("faiss-cpu", "the approximate index", module="faiss") from None
    return faiss


@dataclass(frozen=True)
class IndexInfo:
    """What `build_index` wrote: rows, IVF cells, seconds spent training and adding."""

    rows: int
    nlist: int | None  # None for a factory string without IVF cells ({nlist})
    train_seconds: float
    add_seconds: float
    factory: str = DEFAULT_FACTORY  # the faiss index-factory string built, {nlist} put in


def default_nlist(rows: int) -> int:
    """IVF cells for a corpus: about sqrt(rows) (faiss's guideline), a power of 2, 1 to 65,536.

    Example:
        >>> default_nlist(10_000_000)
        4096
    """
    return int(min(1 << 16, max(1, 2 ** round(math.log2(max(1.0, math.sqrt(rows)))))))


def _stored_features(meta: dict) -> Callable[[Tensor], Tensor]:
    """What turns a batch of stored values (`scan_embeddings(keep_codes=True)`) into features."""
    codec = codec_of(meta)
    if codec is not None:
        return lambda values: angle_features(codec.decode(values))
    codes = meta["encoding"] == "uint8"
    return lambda values: features_of(values, codes=codes)


def _training_sample(path: PathLike, rows: int, size: int, features: Callable[[Tensor], Tensor]) -> np.ndarray:
    """Features of `size` rows spread evenly over the corpus (every rows/size-th row)."""
    picks = np.unique(np.linspace(0, rows - 1, size).astype(np.int64))
    parts, offset = [], 0
    _, batches = scan_embeddings(path, batch_rows=BATCH_ROWS, keep_codes=True)
    for batch in batches:
        local = picks[(picks >= offset) & (picks < offset + len(batch.values))] - offset
        if local.size:
            parts.append(features(batch.values[torch.from_numpy(local)]).numpy())
        offset += len(batch.values)
    return np.concatenate(parts)


def build_index(
    corpus: PathLike,
    out: PathLike,
    *,
    nlist: int | None = None,
    overwrite: bool = False,
    on_rows: Callable[[int], None] | None = None,
    factory: str = DEFAULT_FACTORY,
) -> IndexInfo:
    """Build an approximate index (module docstring) of an embedding Parquet file or folder of angles (or codes).

    `nlist` IVF cells (default `default_nlist`); k-means trains on TRAIN_PER_LIST rows a cell, spread evenly over
    the corpus. The corpus is read twice (once for the training sample, once to add every row), a batch at a
    time; `on_rows(n)` reports the rows added. Duplicate ids and bad rows raise `InputError` (nothing is written).

    `factory` is the faiss index-factory string of the index over the 2n features, inner-product metric, `{nlist}`
    standing for the cells (default `DEFAULT_FACTORY`, IVF with 8-bit scalar codes; e.g. "IVF{nlist},Flat",
    "IVF{nlist},PQ16", "HNSW32"); a string faiss rejects is an `InputError` before the corpus is read. Without
    `{nlist}` (no IVF cells) `nlist` must be None, and k-means (a PQ's codebooks) trains on
    TRAIN_PER_LIST * NO_CELLS_TRAIN rows.
    """
    import time

    faiss = _faiss()
    meta = read_embedding_metadata(corpus)
    if meta["column"] == "vectors":
        raise InputError("holds cosine vectors; the approximate index is for angle files (fidelity models), "
                         "and `qcompress score` searches vectors exactly", file=corpus)
    rows = count_embedding_rows(corpus)
    if rows == 0:
        raise InputError("holds no rows; nothing to index", file=corpus)
    nlist, layout = _layout(factory, nlist, rows)
    dim, features, codec = int(meta["dim"]), _stored_features(meta), codec_of(meta)
    shape = (rows, codec.bytes_per_vector) if codec is not None else (rows, dim)
    faiss.omp_set_num_threads(torch.get_num_threads())
    index = _factory_index(faiss, 2 * dim, layout)
    start = time.perf_counter()
    sample = min(rows, TRAIN_PER_LIST * (nlist if nlist is not None else NO_CELLS_TRAIN))
    try:
        index.train(_training_sample(corpus, rows, sample, features))
    except RuntimeError as err:  # e.g. a PQ with more codebook entries than the corpus has rows
        raise InputError(f"faiss cannot train the index {layout!r} on {sample:,} rows ({_faiss_reason(err)})",
                         field="factory") from None
    trained = time.perf_counter()
    id_schema = pa.schema([pa.field("id", pa.string(), nullable=False)])
    with atomic_dir(out, overwrite=overwrite) as tmp:
        stored = np.float32 if meta["encoding"] == "float32" else np.uint8
        values = np.lib.format.open_memmap(tmp / "values.npy", mode="w+", dtype=stored, shape=shape)
        with pa.OSFile(str(tmp / "ids.arrow"), "wb") as sink, pa.ipc.new_file(sink, id_schema) as writer:
            _, batches = scan_embeddings(corpus, batch_rows=BATCH_ROWS, keep_codes=True, unique=True)
            offset = 0
            for batch in batches:
                index.add(features(batch.values).numpy())
                values[offset : offset + len(batch.values)] = batch.values.numpy()
                writer.write_batch(pa.record_batch([batch.ids], schema=id_schema))
                offset += len(batch.values)
                if on_rows is not None:
                    on_rows(len(batch.values))
        values.flush()
        del values
        faiss.write_index(index, str(tmp / "ivf.faiss"))
        info = {"format": FORMAT, "metadata": meta, "rows": rows, "nlist": nlist, "factory": layout,
                "ids_digest": file_digest(tmp / "ids.arrow"),
                "source": dict(corpus_footprint(corpus), path=str(Path(corpus).resolve()))}
        (tmp / "index.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return IndexInfo(rows, nlist, trained - start, time.perf_counter() - trained, layout)


def _layout(factory: str, nlist: int | None, rows: int) -> tuple[int | None, str]:
    """(IVF cells or None, the factory string with {nlist} put in), checked."""
    if not isinstance(factory, str) or not factory.strip():
        raise InputError(f"factory must be a faiss index-factory string, got {factory!r}", field="factory")
    if "{nlist}" not in factory:
        if nlist is not None:
            raise InputError(f"nlist goes into a factory string's {{nlist}}, and {factory!r} has none",
                             field="nlist")
        return None, factory
    nlist = default_nlist(rows) if nlist is None else nlist
    if isinstance(nlist, bool) or not isinstance(nlist, int) or not 1 <= nlist <= rows:
        raise InputError(f"nlist must be an integer from 1 to the corpus's {rows} rows, got {nlist!r}")
    return nlist, factory.replace("{nlist}", str(nlist))


def _faiss_reason(err: Exception) -> str:
    """What a faiss error says is wrong, without the C++ function and source line in front.

    Example:
        >>> _faiss_reason(RuntimeError("Error in f() at x.cpp:64: Error: 'd % M == 0' failed: d must divide M"))
        'd must divide M'
    """
    text = " ".join(str(err).split()) or type(err).__name__
    text = re.sub(r"^Error in .*? at \S+:\d+: ", "", text)
    return re.sub(r"^Error: '.*?' failed: ", "", text)


def _factory_index(faiss, dim: int, layout: str):
    """The faiss index of the factory string `layout` over `dim` features (inner product); `InputError` when
    faiss rejects the string."""
    try:
        return faiss.index_factory(dim, layout, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise InputError(f"faiss rejects the index factory string {layout!r} ({_faiss_reason(err)}); see faiss's "
                         "index factory (e.g. IVF{nlist},SQ8, IVF{nlist},PQ16, HNSW32)", field="factory") from None


def corpus_footprint(path: PathLike) -> dict:
    """{"rows": ..., "footer_digest": ...} of an embedding Parquet file or folder (its *.parquet files in name
    order): what an index compares with the corpus it was built from, reading only the files' footers.

    Example:
        >>> import tempfile, pathlib
        >>> from qcompress.formats import EmbeddingWriter
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "c.parquet"
        >>> with EmbeddingWriter(path, dim=2, metadata={"similarity": "fidelity"}) as w:
        ...     w.write(["a", "b"], torch.zeros(2, 2))
        >>> corpus_footprint(path)["rows"]
        2
    """
    folder = Path(path)
    files = sorted(f for f in folder.glob("*.parquet") if f.is_file()) if folder.is_dir() else [folder]
    footers, rows = [], 0
    for file in files:
        try:
            metadata = pq.ParquetFile(file).metadata
            footer = pa.BufferOutputStream()  # the footer as pyarrow serializes it (a Parquet _metadata file)
            metadata.write_metadata_file(footer)
            footers.append(file.name.encode() + b"\0" + footer.getvalue().to_pybytes())
            rows += metadata.num_rows
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"not a readable Parquet file ({err})", file=file) from None
    return {"rows": rows, "footer_digest": bytes_digest(b"\0".join(footers))}


def _field(info: dict, name: str, kind: type, file: Path, what: str):
    value = info.get(name) if isinstance(info, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(f"missing or not {what}; build the index again", file=file, field=name)
    return value


def _read_info(folder: Path) -> dict:
    """index.json, each field checked (present, of its type): `InputError` naming the file and field."""
    info_file = folder / "index.json"
    try:
        info = json_loads(info_file.read_text())
    except FileNotFoundError:
        raise InputError("not an index folder (no index.json); build one with `qcompress index build`",
                         file=folder) from None
    except (OSError, ValueError) as err:
        raise InputError(f"unreadable index description ({err}); build the index again", file=info_file) from None
    found = _field(info, "format", int, info_file, "a format number")
    if found != FORMAT:
        raise InputError(f"index format {found} is not this qcompress's ({FORMAT}); build the index again",
                         file=info_file)
    meta = _field(info, "metadata", dict, info_file, "the corpus's metadata (an object)")
    _field(meta, "dim", int, info_file, "a number of qubits")
    _field(meta, "encoding", str, info_file, "an encoding")
    if _field(info, "rows", int, info_file, "a number of rows") < 1:
        raise InputError("must be at least 1; build the index again", file=info_file, field="rows")
    if info.get("nlist") is not None and _field(info, "nlist", int, info_file, "a number of cells (or null)") < 1:
        raise InputError("must be at least 1 (or null: a layout without cells)", file=info_file, field="nlist")
    _field(info, "ids_digest", str, info_file, "a digest")
    _field(info, "factory", str, info_file, "a faiss index-factory string")
    source = _field(info, "source", dict, info_file, "the corpus's description (an object)")
    for name, kind, what in (("path", str, "a path"), ("rows", int, "a number of rows"),
                             ("footer_digest", str, "a digest")):
        _field(source, name, kind, info_file, what)
    return info


def _check_source(info: dict, folder: Path) -> None:
    """Refuse an index whose corpus (when its path still exists) has changed since the index was built."""
    source = info["source"]
    if not os.path.exists(source["path"]):
        return  # gone: the index holds everything it searches
    try:
        now = corpus_footprint(source["path"])
    except InputError as err:
        now = {"rows": "?", "footer_digest": f"unreadable: {err.reason}"}
    if now["rows"] != source["rows"] or now["footer_digest"] != source["footer_digest"]:
        def rows(footprint: dict) -> str:
            count = footprint["rows"]
            return f"{count:,} rows" if isinstance(count, int) else f"{count} rows"

        raise InputError(f"was built from {source['path']} as it was then ({rows(source)}, footer digest "
                         f"{source['footer_digest'][:12]}); it now differs ({rows(now)}, footer digest "
                         f"{now['footer_digest'][:12]}): build the index again", file=folder)


class ApproximateIndex:
    """An index folder written by `build_index`, opened for search (the corpus memory-mapped, the IVF in memory)."""

    def __init__(self, folder: PathLike) -> None:
        faiss = _faiss()
        self.folder = Path(folder)
        info = _read_info(self.folder)
        _check_source(info, self.folder)
        self.metadata, self.rows, self.nlist = info["metadata"], info["rows"], info.get("nlist")
        self.factory = info["factory"]
        self.dim, self.codes = self.metadata["dim"], self.metadata["encoding"] == "uint8"
        self.codec = codec_of(self.metadata, self.folder / "index.json")  # low-bit codes: values holds them packed
        try:
            ids_digest = file_digest(self.folder / "ids.arrow")
            self.ivf = faiss.read_index(str(self.folder / "ivf.faiss"))
            ids = pa.ipc.open_file(pa.memory_map(str(self.folder / "ids.arrow"))).read_all()
            # Copy-on-write: the file is never changed, and torch gets a writable array (it warns on read-only).
            values = np.load(self.folder / "values.npy", mmap_mode="c", allow_pickle=False)
        except (RuntimeError, OSError, ValueError, EOFError, pa.ArrowException) as err:
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise InputError(f"damaged index ({reason}); build it again", file=self.folder) from None
        if ids_digest != info["ids_digest"]:
            raise InputError("damaged index: ids.arrow is not the file `qcompress index build` wrote (its digest "
                             "differs); build it again", file=self.folder)
        expected = (self.rows, self.dim if self.codec is None else self.codec.bytes_per_vector)
        dtype = np.dtype(np.float32 if self.metadata["encoding"] == "float32" else np.uint8)
        if ids.num_rows != self.rows or self.ivf.ntotal != self.rows or values.shape != expected or \
                values.dtype != dtype or self.ivf.d != 2 * self.dim:
            raise InputError(f"damaged index: {ids.num_rows} ids, {self.ivf.ntotal} indexed rows of {self.ivf.d} "
                             f"features and values of shape {values.shape} ({values.dtype}) for {expected} "
                             f"({dtype}) described; build it again", file=self.folder)
        self.ids = ids.column("id").combine_chunks()
        self.values = torch.from_numpy(values)

    def __len__(self) -> int:
        return self.rows

    def candidates(self, queries: Tensor, count: int, nprobe: int, run=None) -> Tensor:
        """(m, count) rows proposed by the IVF for each query (-1 where the probed cells hold fewer)."""
        if run is None:
            with search_workers() as run:
                return self.candidates(queries, count, nprobe, run)
        faiss = _faiss()
        _search_breadth(faiss, self.ivf, nprobe, count)
        features = features_of(queries).numpy()
        pieces = [(s, min(len(features), s + 16)) for s in range(0, len(features), 16)]

        def probe(span: tuple[int, int]) -> np.ndarray:
            faiss.omp_set_num_threads(1)  # this thread's setting: the parallelism is over pieces of queries
            return self.ivf.search(features[span[0] : span[1]], count)[1]

        found = run(probe, pieces)
        return torch.from_numpy(np.concatenate(found) if found else np.empty((0, count), np.int64))

    def search(self, queries: Tensor, k: int, *, nprobe: int = 16, rerank: int = DEFAULT_RERANK
               ) -> tuple[Tensor, list[list[str]]]:
        """Approximate top-k by log-fidelity: (scores (m, k'), ids), best first, ties to the lower row; k' =
        min(k, rows). The scores are exact log-fidelities of the documents returned. A query whose probed cells held
        fewer than k' candidates gets only those: its list of ids is shorter, and its scores past it are -inf."""
        scores, rows = self.search_rows(queries, k, nprobe=nprobe, rerank=rerank)
        flat = rows.flatten().numpy()
        found = flat < self.rows  # unfilled slots point past the corpus, and rank after every candidate
        ids = self.ids.take(pa.array(np.where(found, flat, 0))).to_pylist()
        width = rows.shape[1]
        return scores, [[doc for doc, real in zip(ids[i * width : (i + 1) * width], found[i * width : (i + 1) * width])
                         if real] for i in range(rows.shape[0])]

    def search_rows(self, queries: Tensor, k: int, *, nprobe: int = 16, rerank: int = DEFAULT_RERANK
                    ) -> tuple[Tensor, Tensor]:
        """`search`, returning corpus rows instead of ids."""
        k = check_k(k)
        check_positive("nprobe", nprobe)
        check_positive("rerank", rerank)
        queries = float_angles(queries, "queries")
        check_dims(queries, self.dim)
        k = min(k, self.rows)
        with search_workers() as run:  # torch single-threaded: no OpenMP spin-waits on a busy machine
            found = self.candidates(queries, max(k, rerank), nprobe, run)
            valid = found >= 0
            rows, slots = valid.nonzero(as_tuple=True)
            exact = torch.full(found.shape, -math.inf)
            # Scored by the reference formula, as the exact search scores them.
            decode = None if self.codec is None else self.codec.decode
            exact[rows, slots] = spread_pairs(
                lambda r, d: log_fidelity_pairs(queries, self.values, r, d, codes=self.codes, decode=decode),
                rows, found[rows, slots], run, piece=max(1, (1 << 17) // self.dim))
            # Unfilled slots (fewer candidates than asked): distinct out-of-range rows and -inf, never chosen first.
            filler = self.rows + torch.arange(found.shape[1]).expand_as(found)
            return rank(exact, torch.where(valid, found, filler), k)

    def exact_search(self, queries: Tensor, k: int, *, batch_rows: int = 1 << 20) -> tuple[Tensor, Tensor]:
        """Exact top-k (scores, rows) over the stored corpus, a batch of rows at a time: `recall_at_k`'s truth."""
        queries = float_angles(queries, "queries")
        best = TopK(len(queries), k)
        for start in range(0, self.rows, batch_rows):
            part = self.values[start : start + batch_rows]
            if self.codec is not None:
                index = CodeIndex(part, self.codec)
            else:
                index = FidelityIndex(part, corpus_codes=self.codes, cache_features=False)
            scores, local = index.search(queries, k, floor=best.floor)
            best.add(scores, local + start)
        return best.scores, best.indices


def _search_breadth(faiss, index, nprobe: int, count: int) -> None:
    """How widely `index` looks: an IVF's cells visited (nprobe), an HNSW graph's candidate list (efSearch, at
    least the `count` results asked); other layouts search all they hold."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = nprobe
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = max(nprobe, count)


def recall_at_k(found: Tensor, truth: Tensor) -> float:
    """Share of the true top-k rows (truth (m, k)) that `found` (m, k) holds, over all queries.

    Example:
        >>> recall_at_k(torch.tensor([[1, 2], [3, 4]]), torch.tensor([[2, 1], [3, 5]]))
        0.75
    """
    hits = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist()))
    return hits / max(1, truth.numel())
