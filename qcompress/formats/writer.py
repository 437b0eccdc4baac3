"""`EmbeddingWriter`: write the embedding Parquet format (`qcompress.formats.embeddings`) crash-safe and resumable,
every byte of it through pyarrow.

While it runs, the writer owns the folder `OUT.parquet.partial/`:
    lock                 an exclusive lock (flock) held for the writer's life: a second writer to OUT refuses
    journal.jsonl        a header (journal format, settings), then one line per finished part: its file, rows,
                         size, last id and the caller's digest of the input its rows came from
    part-000001.arrow    one finished chunk of rows, an Arrow IPC file written by pyarrow to a temporary name,
    ...                  flushed to disk and renamed: a part is complete or absent; its journal line comes after
`close()` streams the parts, one at a time, through one `pyarrow.parquet.ParquetWriter` (each part becomes one
row group) into a temporary file beside OUT, renames it onto OUT and deletes the folder: memory holds one part at
a time, and the output depends only on the parts' rows, so an interrupted and resumed run writes the same bytes as
an uninterrupted one. A run that crashes, is interrupted or is killed keeps every finished part; `resume=True`
continues after the last one in the journal (dropping anything a killed run left after it). Nothing ever appears
at OUT before success.

Why Arrow IPC parts and not Parquet parts: the parts are read back once, by this writer, so Parquet's encoding
would be paid twice; an IPC part is the table's own buffers, memory-mapped back at close. `close()` then costs
about one plain Parquet write of the same rows, where Parquet parts would cost a write, a read and a write again
(`benchmarks/writer_rewrite.py` measures both; either is small next to encoding the texts).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import torch
from torch import Tensor

from qcompress._version import __version__
from qcompress.atomic import atomic_file, lock_folder, written_through
from qcompress.codes import AngleCodes
from qcompress.errors import InputError
from qcompress.formats.embeddings import ANGLE_TOLERANCE, CODES, COLUMNS, TEXT_COLUMN, column_type, partial_path
from qcompress.formats.metadata import describe_values, metadata_differences, to_key_values
from qcompress.formats.lines import PathLike
from qcompress.quantization import check_encoding, quantize_angles

__all__ = ["EmbeddingWriter", "RowGroup", "DEFAULT_ROW_GROUP_SIZE", "earlier_metadata"]

DEFAULT_ROW_GROUP_SIZE = 16384
# Version of the journal's layout: 1 was a folder of Parquet parts without a journal, 2 one data file whose
# row groups the journal listed, 3 a folder of Arrow IPC parts.
JOURNAL_FORMAT = 3
_START_OVER = "delete the folder, or start over without resuming"


@dataclass(frozen=True)
class RowGroup:
    """A finished chunk of rows, as the journal records it: one part file now, one row group of the output."""

    part: str  # its file's name in the folder
    rows: int
    size: int  # the part file's size in bytes
    last_id: str
    digest: str | None  # the caller's digest of the input the rows came from (`write(..., digest=...)`)

    def record(self) -> dict:
        """Its journal line."""
        return {"part": self.part, "rows": self.rows, "size": self.size, "last_id": self.last_id,
                "digest": self.digest}


def _part_name(number: int) -> str:
    return f"part-{number:06d}.arrow"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _schema(dim: int, encoding: str, column: str, metadata: dict, texts: bool, codec: AngleCodes | None) -> pa.Schema:
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field(column, column_type(encoding, dim, codec), nullable=False),
    ]
    if texts:
        fields.append(pa.field(TEXT_COLUMN, pa.string(), nullable=False))
    return pa.schema(fields, metadata=to_key_values(metadata))


class EmbeddingWriter:
    """Write (id, embedding[, text]) rows to a qcompress Parquet file, crash-safe and resumable.

    Rows are buffered and written in parts of `row_group_size` rows into `PATH.partial/` (module docstring); each
    part becomes one row group of `PATH`. `close()` (or leaving the `with` block normally) writes `PATH`; if the
    block raises, the buffered rows are written as one more part and the folder stays for `resume=True` (or is
    removed when it holds no rows): nothing ever appears at `PATH` before success. While the writer is open, a
    second writer to `PATH` raises `InputError` (its folder is locked) and changes nothing.

    `resume=True` keeps the parts of an earlier run with the same settings; `rows_written` then starts at
    the number of rows they hold, `row_groups` lists them (with the digests given to `write`) and the caller skips
    that many input rows (`last_id` is the id of the last of them). A mismatch in settings raises `InputError`.
    Without `resume`, an earlier run's folder is emptied.

    `values` are angles in [0, pi] for `column="angles"` (stored as float32, as 8-bit codes with
    `encoding="uint8"`, or as low-bit codes with `encoding="codes"` and their `codec`: a `codes` column, and the
    codec's description, with `levels_source` saying where its levels came from, in the metadata), or float
    vectors for `column="vectors"` (cosine models, float32 only). With `texts=True` each row also keeps its text,
    in a `text` column.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "emb.parquet"
        >>> meta = {"encoder": "minilm", "head": "quantum", "similarity": "fidelity"}
        >>> with EmbeddingWriter(out, dim=2, metadata=meta) as w:
        ...     w.write(["a", "b"], np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32))
        >>> from qcompress.formats import read_embeddings
        >>> e = read_embeddings(out); e.ids, e.values.shape
        (['a', 'b'], torch.Size([2, 2]))
    """

    def __init__(
        self,
        path: PathLike,
        *,
        dim: int,
        metadata: Mapping[str, Any],
        encoding: str = "float32",
        column: str = "angles",
        resume: bool = False,
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        texts: bool = False,
        codec: AngleCodes | None = None,
        levels_source: str | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if column not in COLUMNS or column == CODES:
            raise ValueError(f"column must be angles or vectors (what the model outputs), got {column!r}")
        if encoding == CODES:
            if column != "angles":
                raise ValueError("low-bit codes store qubit angles; this model outputs cosine vectors (float32 only)")
            if codec is None or codec.dim != dim:
                raise ValueError(f"encoding='codes' needs the codec of the {dim} qubits, got {codec!r}")
            column = CODES
        else:
            check_encoding(encoding, column)
            if codec is not None:
                raise ValueError(f"a codec goes with encoding='codes', not {encoding!r}")
        if isinstance(row_group_size, bool) or not isinstance(row_group_size, int) or row_group_size <= 0:
            raise ValueError(f"row_group_size must be a positive integer, got {row_group_size!r}")
        # The descriptive fields follow the encoding written here (a quantized copy's source had others).
        meta = {key: value for key, value in metadata.items() if key not in ("decoding", "scale", "score")}
        for key, value in (("dim", dim), ("encoding", encoding), ("column", column)):
            if key in meta and meta[key] != value:
                raise ValueError(f"metadata[{key!r}] is {meta[key]!r} but the writer was given {key}={value!r}")
        meta.update(dim=dim, encoding=encoding, column=column)
        if codec is not None:
            meta[CODES] = dict(codec.to_metadata(), **({"levels_source": levels_source} if levels_source else {}))
        meta.update(describe_values(meta))
        meta.setdefault("qcompress_version", __version__)
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as err:
            raise ValueError(f"metadata must be JSON-serialisable: {err}") from None

        self.path = Path(path)
        # A pipe or a device (/dev/null) gets the file at close, written through (qcompress.atomic); its parts go to
        # a private temporary folder, not beside it: there is nothing to resume, and /dev is no place for a folder.
        self.private = written_through(self.path)
        if self.private and resume:
            raise InputError("is a pipe or a device, written through at the end: there is nothing to resume",
                             file=self.path)
        self.partial = Path(tempfile.mkdtemp(prefix="qcompress-parts-")) if self.private else partial_path(self.path)
        self.dim, self.encoding, self.column, self.texts, self.codec = dim, encoding, column, bool(texts), codec
        self.metadata = meta
        self.row_group_size = row_group_size
        self.schema = _schema(dim, encoding, column, meta, self.texts, codec)
        self.rows_written = 0
        self.last_id: str | None = None
        self.row_groups: list[RowGroup] = []
        self._buffer: list[tuple[list[str], np.ndarray, list[str] | None]] = []
        self._buffered = 0
        self._closed = False

        if self.partial.is_symlink() or (self.partial.exists() and not self.partial.is_dir()):
            if resume:
                raise InputError(f"exists but is not a folder written by qcompress; {_START_OVER}", file=self.partial)
            self.partial.unlink()
        self._lock = lock_folder(self.partial, self.path)
        try:
            if resume and (self.partial / "journal.jsonl").exists():
                self._recover()
            elif resume and any(entry.name != "lock" for entry in self.partial.iterdir()):
                raise InputError(f"was left by another qcompress version (it holds no resume journal); {_START_OVER}",
                                 file=self.partial)
            else:
                self._start()
        except BaseException:
            self._release()
            raise

    # -- the journal ---------------------------------------------------------------------------------------------
    def _header(self) -> dict:
        return {"format": JOURNAL_FORMAT, "metadata": self.metadata, "columns": self.schema.names}

    def _start(self) -> None:
        """A fresh run: empty the folder (an earlier run's leftovers) but for the lock, then write the header."""
        self._clear(keep={"lock"})
        self._append_journal(self._header(), create=True)

    def _clear(self, keep: set[str]) -> None:
        """Delete everything in the folder but the names in `keep`."""
        for entry in self.partial.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()

    def _append_journal(self, record: dict, *, create: bool = False) -> None:
        flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_TRUNC if create else 0)
        fd = os.open(self.partial / "journal.jsonl", flags, 0o666)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())  # one write: a crash leaves a whole line or a torn last
            os.fsync(fd)
        finally:
            os.close(fd)

    def _recover(self) -> None:
        """Read the journal of the earlier run, check its settings, keep its finished parts; delete the rest."""
        journal = self.partial / "journal.jsonl"
        lines = journal.read_bytes().split(b"\n")
        self._check_header(lines[0])
        kept = len(lines[0]) + 1
        for line in lines[1:]:
            group = self._finished(line, journal)
            if group is None:
                break  # a torn last line, or a part not on disk whole: it and everything after it go
            self.row_groups.append(group)
            kept += len(line) + 1
        os.truncate(journal, min(kept, journal.stat().st_size))
        self._clear(keep={"lock", journal.name, *(group.part for group in self.row_groups)})
        self.rows_written = sum(group.rows for group in self.row_groups)
        self.last_id = self.row_groups[-1].last_id if self.row_groups else None

    def _check_header(self, line: bytes) -> None:
        """Refuse a journal of another layout (an older qcompress) or of other settings, in one line."""
        try:
            header = json.loads(line)
        except json.JSONDecodeError:
            header = None
        found = header.get("format") if isinstance(header, dict) else None
        if found != JOURNAL_FORMAT:
            was = f"format {found}" if isinstance(found, int) else "an unknown format"
            raise InputError(f"was left by another qcompress version (its resume journal has {was}, this version "
                             f"writes format {JOURNAL_FORMAT}); {_START_OVER}", file=self.partial)
        diff = metadata_differences(header.get("metadata", {}), self.metadata)
        if header.get("columns") != self.schema.names:
            diff.append(f"columns {json.dumps(header.get('columns'))} vs {json.dumps(self.schema.names)}")
        if diff:
            raise InputError(
                f"cannot resume: the earlier run wrote different settings ({'; '.join(diff)}). Use the same "
                "model and options, or start over without resuming",
                file=self.partial,
            )

    def _finished(self, line: bytes, journal: Path) -> RowGroup | None:
        """The finished part a journal line records, or None when the line is torn or its part is not whole."""
        try:
            item = json.loads(line)
            group = RowGroup(str(item["part"]), int(item["rows"]), int(item["size"]), str(item["last_id"]),
                             item["digest"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        number = len(self.row_groups) + 1
        if group.part != _part_name(number) or group.rows <= 0:
            raise InputError(f"line {number + 1} is not the part after the one before; {_START_OVER}", file=journal)
        part = self.partial / group.part
        # Parts are flushed before their journal line, but a rename may not have reached the disk before a crash.
        return group if part.is_file() and part.stat().st_size == group.size else None

    # -- writing -----------------------------------------------------------------------------------------------
    def write(
        self,
        ids: Sequence[str],
        values: np.ndarray | Tensor,
        *,
        texts: Sequence[str] | None = None,
        digest: str | None = None,
    ) -> None:
        """Append rows: `ids` (B strings), `values` (B, dim) and, for a writer made with `texts=True`, `texts`.

        With `digest` (a string naming the input these rows came from), the rows buffered so far are written at
        once (ending their row group) and the last row group records the digest, for a later resume to compare.
        """
        if self._closed:
            raise ValueError(f"EmbeddingWriter for {self.path} is closed")
        array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(f"values must have shape (rows, {self.dim}), got {tuple(array.shape)}")
        ids = list(ids)
        if len(ids) != array.shape[0]:
            raise ValueError(f"got {len(ids)} ids for {array.shape[0]} rows of values")
        for doc_id in ids:
            if not isinstance(doc_id, str) or not doc_id:
                raise ValueError(f"ids must be non-empty strings, got {doc_id!r}")
        if (texts is not None) != self.texts:
            raise ValueError("texts must be given exactly when the writer was made with texts=True")
        if texts is not None:
            texts = list(texts)
            if len(texts) != len(ids) or not all(isinstance(t, str) for t in texts):
                raise ValueError(f"texts must be {len(ids)} strings, one per id")
        stored = self._checked(array, ids)
        self._buffer.append((ids, stored, texts))
        self._buffered += len(ids)
        self.rows_written += len(ids)
        if ids:
            self.last_id = ids[-1]
        if digest is None:
            while self._buffered >= self.row_group_size:
                self._flush(self.row_group_size, None)
            return
        while self._buffered > self.row_group_size:
            self._flush(self.row_group_size, None)
        self._flush(self._buffered, digest)

    def _checked(self, array: np.ndarray, ids: list[str]) -> np.ndarray:
        """The values as stored (float32, uint8 codes, or packed low-bit codes), after checking they are finite and
        in range."""
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).any(axis=1).argmax())
            raise ValueError(f"values for id {ids[bad]!r} contain NaN or infinite numbers; nothing was written")
        if self.column != "vectors":
            if array.size and (array.min() < -ANGLE_TOLERANCE or array.max() > math.pi + ANGLE_TOLERANCE):
                raise ValueError(
                    f"angles must be radians in [0, pi], got values in [{array.min():.4g}, {array.max():.4g}]"
                )
            array = np.clip(array, 0.0, math.pi).astype(np.float32, copy=False)
        if self.codec is not None:
            return self.codec.encode(torch.from_numpy(array)).numpy()
        return quantize_angles(array) if self.encoding == "uint8" else np.array(array, dtype=np.float32)

    def _take(self, rows: int) -> tuple[list[str], np.ndarray, list[str] | None]:
        """The first `rows` buffered rows, removed from the buffer."""
        ids: list[str] = []
        values: list[np.ndarray] = []
        texts: list[str] | None = [] if self.texts else None
        while len(ids) < rows:
            b_ids, b_values, b_texts = self._buffer[0]
            need = rows - len(ids)
            ids += b_ids[:need]
            values.append(b_values[:need])
            if texts is not None:
                texts += b_texts[:need]
            if need >= len(b_ids):
                self._buffer.pop(0)
            else:
                self._buffer[0] = (b_ids[need:], b_values[need:], b_texts[need:] if b_texts is not None else None)
        self._buffered -= rows
        return ids, (np.concatenate(values) if len(values) > 1 else values[0]), texts

    def _flush(self, rows: int, digest: str | None) -> None:
        """Write `rows` buffered rows as the next part (flushed to disk, renamed into place), then its journal line."""
        if rows <= 0:
            return
        ids, values, texts = self._take(rows)
        columns = [pa.array(ids, pa.string()), self._values_column(values)]
        if texts is not None:
            columns.append(pa.array(texts, pa.string()))
        part = self.partial / _part_name(len(self.row_groups) + 1)
        with atomic_file(part) as tmp:
            with open(tmp, "wb") as sink:
                with ipc.new_file(sink, self.schema) as writer:
                    writer.write_table(pa.Table.from_arrays(columns, schema=self.schema))
                sink.flush()
                os.fsync(sink.fileno())  # the part is on disk before the journal says it is
        group = RowGroup(part.name, rows, part.stat().st_size, ids[-1], digest)
        self._append_journal(group.record())
        self.row_groups.append(group)

    def _values_column(self, values: np.ndarray) -> pa.Array:
        """Stored values (rows, ...) as the Arrow column: packed code rows as `fixed_size_binary`, else a
        fixed-size list of numbers."""
        values = np.ascontiguousarray(values)
        if self.codec is not None:
            arrow_type = self.schema.field(CODES).type
            return pa.FixedSizeBinaryArray.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), self.dim)

    def close(self) -> None:
        """Write the remaining rows, then `path` from the parts (`_write_output`); delete `path.partial`.

        If this fails, the folder stays for `resume=True` (as after `abort`)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._flush(self._buffered, None)
            with atomic_file(self.path) as tmp:
                self._write_output(tmp)
        except BaseException:
            self._leave()
            raise
        self._remove_folder()

    def _write_output(self, path: Path) -> None:
        """The output file: each part in turn, memory-mapped, as one row group of one ParquetWriter.

        Nothing here depends on how the parts came to be (one run or several), so the bytes do not either. No
        statistics for texts: a row group's min and max texts would go into the file's metadata whole."""
        statistics = ["id"] if self.codec is not None else ["id", f"{self.column}.list.element"]
        with pq.ParquetWriter(str(path), self.schema, write_statistics=statistics) as out:
            for group in self.row_groups:
                out.write_table(self._read_part(group), row_group_size=group.rows)
            if not self.row_groups:
                out.write_table(self.schema.empty_table())  # one empty row group, as pyarrow writes an empty table
        _fsync(path)

    def _read_part(self, group: RowGroup) -> pa.Table:
        path = self.partial / group.part
        try:
            with pa.memory_map(str(path)) as source:
                table = ipc.open_file(source).read_all()
        except (pa.ArrowException, OSError) as err:
            raise InputError(f"cannot read this finished part ({err}); {_START_OVER}", file=path) from None
        if table.num_rows != group.rows or not table.schema.equals(self.schema, check_metadata=True):
            raise InputError(f"does not hold the rows its journal line says; {_START_OVER}", file=path)
        return table

    def abort(self) -> None:
        """Stop without writing `path`: buffered rows become one more part, kept for `resume=True`; a folder that
        holds no rows is removed."""
        if self._closed:
            return
        self._closed = True
        try:
            self._flush(self._buffered, None)
        finally:
            self._leave()

    def _leave(self) -> None:
        """Stop holding the folder: keep it when it holds finished parts (for a resume), else remove it."""
        if self.row_groups and not self.private:
            self._release()
        else:
            self._remove_folder()

    def _remove_folder(self) -> None:
        """Delete the folder, the lock file last, while still holding the lock."""
        self._clear(keep={"lock"})
        (self.partial / "lock").unlink(missing_ok=True)
        try:
            self.partial.rmdir()
        except OSError:
            pass  # someone else's file appeared in it: leave the folder
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = None

    def __enter__(self) -> "EmbeddingWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.abort()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass


def earlier_metadata(path: PathLike) -> dict | None:
    """The metadata that an interrupted writer to `path` recorded in its journal (`PATH.partial/`), or None when
    there is none to read: what a resumed run must repeat (a code file's levels, so that `compress --resume` codes
    its rows with the earlier run's). The writer checks it again under its lock.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "emb.parquet"
        >>> writer = EmbeddingWriter(out, dim=2, metadata={"similarity": "fidelity"})
        >>> writer.abort()  # an interrupted run that wrote no rows leaves nothing to resume
        >>> earlier_metadata(out) is None
        True
    """
    try:
        with open(partial_path(path) / "journal.jsonl", "rb") as journal:
            header = json.loads(journal.readline())
    except (OSError, json.JSONDecodeError):
        return None
    meta = header.get("metadata") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else None
