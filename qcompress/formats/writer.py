"""`EmbeddingWriter`: write the embedding Parquet format (`qcompress.formats.embeddings`), crash-safe and resumable.

The writer writes in row groups to a folder `OUT.parquet.partial/` of complete part files, each renamed into place
when written; `close()` merges them into `OUT.parquet`. A run that crashes, is interrupted or is killed keeps
every finished part, and `resume=True` continues after them. Nothing ever appears at `OUT.parquet` before success.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from torch import Tensor

from qcompress._version import __version__
from qcompress.atomic import atomic_file
from qcompress.errors import InputError
from qcompress.formats.embeddings import (
    ANGLE_TOLERANCE,
    COLUMNS,
    METADATA_KEY,
    metadata_differences,
    partial_path,
    value_type,
)
from qcompress.formats.lines import PathLike
from qcompress.quantization import check_encoding, quantize_angles

__all__ = ["EmbeddingWriter", "DEFAULT_ROW_GROUP_SIZE"]

DEFAULT_ROW_GROUP_SIZE = 16384
_PART = re.compile(r"^part-(\d{6})\.parquet$")
_START_OVER = "delete the folder, or start over without resuming"


def _schema(dim: int, encoding: str, column: str, metadata: dict) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field(column, pa.list_(value_type(encoding), dim), nullable=False),
        ],
        metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)},
    )


class EmbeddingWriter:
    """Write (id, embedding) rows to a qcompress Parquet file, crash-safe and resumable.

    Rows are buffered and written in row groups of `row_group_size` rows, each as a complete Parquet part file
    in the folder `PATH.partial/`. `close()` (or leaving the `with` block normally) merges the parts into `PATH`
    (atomically) and deletes the folder. If the block raises, the buffered rows are written as one more part
    and the folder stays: nothing ever appears at `PATH` before success.

    `resume=True` keeps the parts of an earlier run with the same metadata; `rows_written` then starts at the
    number of rows they hold, and the caller skips that many input rows (`last_id` is the id of the last of
    them, to check the input is the same). A mismatch in metadata raises `InputError`. Without `resume`, an
    existing `PATH.partial` is discarded.

    `values` are angles in [0, pi] for `column="angles"` (stored as float32, or as 8-bit codes with
    `encoding="uint8"`), or float vectors for `column="vectors"` (cosine models, float32 only).

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
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if column not in COLUMNS:
            raise ValueError(f"column must be one of {', '.join(COLUMNS)}, got {column!r}")
        check_encoding(encoding, column)
        if isinstance(row_group_size, bool) or not isinstance(row_group_size, int) or row_group_size <= 0:
            raise ValueError(f"row_group_size must be a positive integer, got {row_group_size!r}")
        meta = dict(metadata)
        for key, value in (("dim", dim), ("encoding", encoding), ("column", column)):
            if key in meta and meta[key] != value:
                raise ValueError(f"metadata[{key!r}] is {meta[key]!r} but the writer was given {key}={value!r}")
        meta.update(dim=dim, encoding=encoding, column=column)
        meta.setdefault("qcompress_version", __version__)
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as err:
            raise ValueError(f"metadata must be JSON-serialisable: {err}") from None

        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.dim, self.encoding, self.column = dim, encoding, column
        self.metadata = meta
        self.row_group_size = row_group_size
        self.schema = _schema(dim, encoding, column, meta)
        self.rows_written = 0
        self.last_id: str | None = None
        self._parts = 0
        self._buffer_ids: list[str] = []
        self._buffer_values: list[np.ndarray] = []
        self._buffered = 0
        self._closed = False

        if self.partial.exists() and resume:
            self._recover()
        elif self.partial.exists() or self.partial.is_symlink():
            _remove(self.partial)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir(exist_ok=True)

    # -- resume ------------------------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Count the rows of the earlier run's parts, after checking they are complete and of the same settings."""
        parts = self._earlier_parts()
        last_part = None
        for entry in parts:
            try:
                info = pq.ParquetFile(entry)
            except (pa.ArrowException, OSError) as err:
                raise InputError(f"cannot read part ({err}); {_START_OVER}", file=entry) from None
            raw = (info.schema_arrow.metadata or {}).get(METADATA_KEY)
            diff = metadata_differences(json.loads(raw) if raw else {}, self.metadata)
            if diff:
                raise InputError(
                    f"cannot resume: the earlier run wrote different settings ({'; '.join(diff)}). Use the same "
                    "model and options, or start over without resuming",
                    file=self.partial,
                )
            self.rows_written += info.metadata.num_rows
            if info.metadata.num_rows:
                last_part = info
        if last_part is not None:
            ids = last_part.read(columns=["id"]).column("id")
            self.last_id = ids[len(ids) - 1].as_py()
        self._parts = len(parts)

    def _earlier_parts(self) -> list[Path]:
        """The part files in `partial`, numbered 0, 1, ... without gaps; half-written temporary files deleted."""
        if not self.partial.is_dir():
            raise InputError(
                "exists but is not a folder of parts written by qcompress; delete it, or start over without resuming",
                file=self.partial,
            )
        parts = []
        for entry in sorted(self.partial.iterdir()):
            match = _PART.match(entry.name)
            if match is None:
                # Temporary files of a part that was being written when the run stopped: never complete.
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    entry.unlink(missing_ok=True)
                    continue
                raise InputError(
                    f"unexpected file {entry.name!r} in the resume folder; {_START_OVER}", file=self.partial
                )
            parts.append((int(match.group(1)), entry))
        for expected, (index, entry) in enumerate(parts):
            if index != expected:
                raise InputError(
                    f"part {expected:06d} is missing from the resume folder (found {entry.name}); {_START_OVER}",
                    file=self.partial,
                )
        return [entry for _, entry in parts]

    # -- writing -----------------------------------------------------------------------------------------------
    def write(self, ids: Sequence[str], values: np.ndarray | Tensor) -> None:
        """Append rows: `ids` (B strings) and `values` (B, dim); written to disk in row groups."""
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
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).any(axis=1).argmax())
            raise ValueError(f"values for id {ids[bad]!r} contain NaN or infinite numbers; nothing was written")
        if self.column == "angles":
            if array.size and (array.min() < -ANGLE_TOLERANCE or array.max() > math.pi + ANGLE_TOLERANCE):
                raise ValueError(
                    f"angles must be radians in [0, pi], got values in [{array.min():.4g}, {array.max():.4g}]"
                )
            array = np.clip(array, 0.0, math.pi).astype(np.float32, copy=False)
        stored = quantize_angles(array) if self.encoding == "uint8" else np.array(array, dtype=np.float32)
        self._buffer_ids.extend(ids)
        self._buffer_values.append(stored)
        self._buffered += len(ids)
        self.rows_written += len(ids)
        if ids:
            self.last_id = ids[-1]
        while self._buffered >= self.row_group_size:
            self._flush(self.row_group_size)

    def _flush(self, rows: int) -> None:
        if rows <= 0:
            return
        values = np.concatenate(self._buffer_values) if len(self._buffer_values) > 1 else self._buffer_values[0]
        ids, self._buffer_ids = self._buffer_ids[:rows], self._buffer_ids[rows:]
        head, rest = values[:rows], values[rows:]
        self._buffer_values = [rest] if len(rest) else []
        self._buffered -= rows
        flat = pa.array(np.ascontiguousarray(head).reshape(-1))
        table = pa.Table.from_arrays(
            [pa.array(ids, pa.string()), pa.FixedSizeListArray.from_arrays(flat, self.dim)], schema=self.schema
        )
        with atomic_file(self.partial / f"part-{self._parts:06d}.parquet") as tmp:
            pq.write_table(table, tmp)
        self._parts += 1

    def close(self) -> None:
        """Write the remaining rows, merge all parts into `path` (atomically) and delete `path.partial`."""
        if self._closed:
            return
        self._flush(self._buffered)
        parts = [self.partial / f"part-{i:06d}.parquet" for i in range(self._parts)]
        with atomic_file(self.path) as tmp:
            with pq.ParquetWriter(tmp, self.schema) as writer:
                if not parts:
                    writer.write_table(self.schema.empty_table())
                for part in parts:
                    table = pq.read_table(part, schema=self.schema)
                    writer.write_table(table, row_group_size=max(1, table.num_rows))
        self._closed = True
        shutil.rmtree(self.partial, ignore_errors=True)

    def abort(self) -> None:
        """Stop without writing `path`: buffered rows become one more part, kept for `resume=True`."""
        if self._closed:
            return
        self._closed = True
        self._flush(self._buffered)

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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)

