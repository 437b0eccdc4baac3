"""Every file format at qcompress's edges, in one place: input texts and pairs, embedding Parquet, TREC runs/qrels.

Readers raise `InputError` naming the file, the 1-based line and the field, so that the CLI prints one line and
exits 1. Writers never leave a partial file at the final path.

Embedding files (SPEC §6) are Parquet with an `id` string column and either `angles` (fixed-size list of float32
radians in [0, pi], or of uint8 codes round(theta/pi*255)) or `vectors` (float32, cosine models). The file's
key-value metadata holds, under the key `qcompress`, a JSON object naming the model (encoder, head, dim,
similarity, ...) and the encoding, so that two files from different models are never scored against each other.

`EmbeddingWriter` writes in row groups to a folder `OUT.parquet.partial/` of complete part files, each renamed
into place when written; `close()` merges them into `OUT.parquet`. A run that crashes, is interrupted or is
killed keeps every finished part, and `resume=True` continues after them.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from qcompress._version import __version__
from qcompress.atomic import atomic_file
from qcompress.errors import InputError
from qcompress.quantization import ENCODINGS, check_encoding, dequantize_angles, quantize_angles

__all__ = [
    "iter_texts",
    "read_texts",
    "read_parquet_texts",
    "read_pairs",
    "METADATA_KEY",
    "MODEL_FIELDS",
    "EmbeddingWriter",
    "Embeddings",
    "partial_path",
    "read_embeddings",
    "read_embedding_metadata",
    "iter_embedding_batches",
    "quantize_angles",
    "dequantize_angles",
    "check_same_model",
    "write_run",
    "read_run",
    "read_qrels",
    "iter_qrels",
]

PathLike = str | os.PathLike
STDIN = "-"
_STDIN_NAME = "<stdin>"
_JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
_TSV_SUFFIXES = {".tsv", ".txt"}
_WHITESPACE = re.compile(r"\s")


# -- reading lines ---------------------------------------------------------------------------------------------


def _display(path: PathLike) -> str:
    return _STDIN_NAME if str(path) == STDIN else str(path)


def _open_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Open `path` (or stdin for "-") now, so a missing file fails at once; return its numbered lines lazily."""
    if str(path) == STDIN:
        # Bytes where possible, so that bad UTF-8 is reported on its own line (text streams decode in chunks).
        stream = getattr(sys.stdin, "buffer", sys.stdin)
        return _numbered(stream, _STDIN_NAME, close=False)
    p = Path(path)
    if p.is_dir():
        raise InputError("is a folder; expected a file", file=p)
    try:
        stream = open(p, "rb")
    except FileNotFoundError:
        raise InputError("file not found; check the path", file=p) from None
    except OSError as err:
        raise InputError(f"cannot open file: {err.strerror}", file=p) from None
    return _numbered(stream, str(p), close=True)


def _numbered(stream: IO, name: str, *, close: bool) -> Iterator[tuple[int, str]]:
    try:
        for lineno, raw in enumerate(stream, 1):
            if isinstance(raw, bytes):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise InputError(
                        f"not valid UTF-8 text ({err.reason} at byte {err.start + 1} of the line); "
                        "save the file as UTF-8",
                        file=name,
                        line=lineno,
                    ) from None
            else:
                line = raw
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # byte-order mark of some Windows editors: not data
            yield lineno, line.rstrip("\r\n")
    finally:
        if close:
            stream.close()


def _sniff(path: PathLike, lines: Iterator[tuple[int, str]]) -> tuple[str, Iterator[tuple[int, str]]]:
    """"jsonl" or "tsv": by extension, else (stdin, other names) by the first non-blank line."""
    suffix = Path(str(path)).suffix.lower() if str(path) != STDIN else ""
    if suffix in _JSONL_SUFFIXES:
        return "jsonl", lines
    if suffix in _TSV_SUFFIXES:
        return "tsv", lines
    head: list[tuple[int, str]] = []
    for item in lines:
        head.append(item)
        if item[1].strip():
            break
    first = head[-1][1].lstrip() if head else ""
    kind = "jsonl" if first.startswith(("{", "[")) else "tsv"
    return kind, itertools.chain(head, lines)


def _json_object(line: str, name: str, lineno: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(
            f"malformed JSON ({err.msg} at column {err.colno}); expected one JSON object per line (JSONL)",
            file=name,
            line=lineno,
        ) from None
    if not isinstance(record, dict):
        hint = " (a JSON array: write one object per line, e.g. `jq -c '.[]' in.json > in.jsonl`)" if isinstance(
            record, list
        ) else ""
        raise InputError(
            f"expected a JSON object per line, got a {type(record).__name__}{hint}", file=name, line=lineno
        )
    return record


def _check_id(value: str, name: str, lineno: int, field: str | None) -> str:
    if not value:
        raise InputError("id is empty; every record needs a non-empty id", file=name, line=lineno, field=field)
    if _WHITESPACE.search(value):
        raise InputError(
            f"id {value!r} contains whitespace; ids must not contain spaces or tabs "
            "(TREC run files are whitespace-separated)",
            file=name,
            line=lineno,
            field=field,
        )
    return value


def _record_id(record: dict, id_fields: Sequence[str], name: str, lineno: int) -> str:
    for field in id_fields:
        if field in record:
            value = record[field]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise InputError(
                    f"id must be a string or an integer, got {json.dumps(value)}", file=name, line=lineno, field=field
                )
            return _check_id(str(value).strip(), name, lineno, field)
    names = " or ".join(f'"{f}"' for f in id_fields)
    raise InputError(f"missing id: each record needs a {names} field", file=name, line=lineno, field=id_fields[0])


def _record_text(record: dict, name: str, lineno: int, fields: Sequence[str] = ("text",)) -> str:
    """The record's text (first of `fields` present), with its title in front when it has one (BEIR's rule)."""
    for field in fields:
        if field in record:
            break
    else:
        names = " or ".join(f'"{f}"' for f in fields)
        raise InputError(f"missing: each record needs a {names} string", file=name, line=lineno, field=fields[0])
    text = record[field]
    if not isinstance(text, str):
        raise InputError(f"must be a string, got {json.dumps(text)[:60]}", file=name, line=lineno, field=field)
    title = record.get("title")
    if title is None:
        return text.strip()
    if not isinstance(title, str):
        raise InputError(
            f"must be a string when present, got {json.dumps(title)[:60]}", file=name, line=lineno, field="title"
        )
    return (title + " " + text).strip()


# -- input texts -----------------------------------------------------------------------------------------------


def iter_texts(
    path: PathLike, *, id_fields: Sequence[str] = ("_id", "id"), allow_empty: bool = False
) -> Iterator[tuple[str, str]]:
    """Stream (id, text) from a JSONL or TSV file, or stdin for "-"; see `read_texts` for the formats.

    The file is opened at once (a missing file raises here); records are parsed as they are consumed, so a
    corpus larger than memory can be compressed. Only the ids are kept, to detect duplicates.
    """
    name = _display(path)
    lines = _open_lines(path)
    return _iter_texts(path, name, lines, tuple(id_fields), allow_empty)


def _iter_texts(
    path: PathLike, name: str, lines: Iterator[tuple[int, str]], id_fields: tuple[str, ...], allow_empty: bool
) -> Iterator[tuple[str, str]]:
    kind, lines = _sniff(path, lines)
    seen: dict[str, int] = {}
    first = True
    for lineno, line in lines:
        if not line.strip():
            continue
        if kind == "jsonl":
            record = _json_object(line, name, lineno)
            doc_id = _record_id(record, id_fields, name, lineno)
            text = _record_text(record, name, lineno)
            text_field = "text"
        else:
            if "\t" not in line:
                raise InputError(
                    "no tab: expected `id<TAB>text` (or JSONL records in a .jsonl file)", file=name, line=lineno
                )
            raw_id, text = line.split("\t", 1)
            raw_id = raw_id.strip()
            if first and raw_id.lower() in ("id", "_id") and text.strip().lower() == "text":
                first = False
                continue  # header line
            doc_id = _check_id(raw_id, name, lineno, "id")
            text = text.strip()
            text_field = "text"
        first = False
        if not text and not allow_empty:
            raise InputError("text is empty; every record needs some text", file=name, line=lineno, field=text_field)
        if doc_id in seen:
            raise InputError(
                f'duplicate id "{doc_id}" (first on line {seen[doc_id]}); ids must be unique',
                file=name,
                line=lineno,
                field="id",
            )
        seen[doc_id] = lineno
        yield doc_id, text


def read_texts(
    path: PathLike, *, id_fields: Sequence[str] = ("_id", "id"), allow_empty: bool = False
) -> list[tuple[str, str]]:
    """Read (id, text) records, in file order, from JSONL or TSV (or stdin for "-").

    Formats: `.jsonl`/`.json` hold one JSON object per line with an id (`_id` or `id`, string or integer), a
    `text` string and an optional `title`; the text is then `title + " " + text` (BEIR's rule). `.tsv`/`.txt`
    hold `id<TAB>text` lines; a header `id<TAB>text` is skipped. Stdin and other names are sniffed from the
    first non-blank line (`{` means JSONL). Blank lines are skipped. Empty texts, duplicate ids and ids with
    whitespace are errors.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "docs.jsonl"
        >>> _ = p.write_text('{"_id": 1, "title": "Wings", "text": "lift and drag"}\\n')
        >>> read_texts(p)
        [('1', 'Wings lift and drag')]
    """
    return list(iter_texts(path, id_fields=id_fields, allow_empty=allow_empty))


def read_parquet_texts(path: PathLike) -> list[tuple[str, str]]:
    """A Parquet file of texts: an id column (`_id` or `id`, strings or integers), `text`, optional `title`
    (text = title + " " + text, BEIR's rule). Same rules as the JSONL reader: unique non-empty ids without
    whitespace, non-empty texts."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found; check the path", file=path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"not a readable Parquet file ({err})", file=path) from None
    id_field = next((f for f in ("_id", "id") if f in schema.names), None)
    if id_field is None:
        raise InputError('missing id: the table needs an "_id" or "id" column', file=path, field="id")
    if "text" not in schema.names:
        raise InputError('missing: the table needs a "text" column', file=path, field="text")
    columns = [id_field, "text"] + (["title"] if "title" in schema.names else [])
    table = pq.read_table(path, columns=columns)
    for name in columns:
        kind = table.schema.field(name).type
        ok = pa.types.is_string(kind) or pa.types.is_large_string(kind) or (
            name == id_field and pa.types.is_integer(kind))
        if not ok:
            raise InputError(f"must be a string column, got {kind}", file=path, field=name)
    ids = table.column(id_field).to_pylist()
    texts = table.column("text").to_pylist()
    titles = table.column("title").to_pylist() if "title" in columns else [None] * len(ids)
    records: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for row, (raw_id, text, title) in enumerate(zip(ids, texts, titles), 1):
        if raw_id is None:
            raise InputError(f"row {row}: id is missing (null)", file=path, field=id_field)
        doc_id = _check_id(str(raw_id).strip(), f"{path} row {row}", None, id_field)
        if text is None:
            raise InputError(f"row {row}: text is missing (null)", file=path, field="text")
        text = ((title + " " + text) if title is not None else text).strip()
        if not text:
            raise InputError(f"row {row}: text is empty; every record needs some text", file=path, field="text")
        if doc_id in seen:
            raise InputError(f'row {row}: duplicate id "{doc_id}" (first in row {seen[doc_id]}); ids must be unique',
                             file=path, field=id_field)
        seen[doc_id] = row
        records.append((doc_id, text))
    return records


_PAIR_PASSAGE_FIELDS = ("passage", "text", "document")


def read_pairs(path: PathLike) -> list[tuple[str, str]]:
    """Read (query, passage) text pairs from TSV `query<TAB>passage` or JSONL (or stdin for "-").

    JSONL records need a `query` string and a passage under `passage`, `text` or `document`. A TSV header
    `query<TAB>passage` is skipped. Both texts must be non-empty.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "pairs.tsv"
        >>> _ = p.write_text("what is lift\\tLift is a force.\\n")
        >>> read_pairs(p)
        [('what is lift', 'Lift is a force.')]
    """
    name = _display(path)
    kind, lines = _sniff(path, _open_lines(path))
    pairs: list[tuple[str, str]] = []
    first = True
    for lineno, line in lines:
        if not line.strip():
            continue
        if kind == "jsonl":
            record = _json_object(line, name, lineno)
            query = record.get("query")
            if query is None:
                raise InputError("missing: each record needs a \"query\" string", file=name, line=lineno, field="query")
            if not isinstance(query, str):
                raise InputError(
                    f"must be a string, got {json.dumps(query)[:60]}", file=name, line=lineno, field="query"
                )
            passage_field = next((f for f in _PAIR_PASSAGE_FIELDS if f in record), "passage")
            passage = _plain_text(record, passage_field, name, lineno)
            query = query.strip()
        else:
            fields = line.split("\t")
            if len(fields) != 2:
                what = "no tab" if len(fields) == 1 else f"{len(fields)} tab-separated fields"
                raise InputError(
                    f"{what}: expected exactly 2 fields, `query<TAB>passage`", file=name, line=lineno
                )
            query, passage = fields[0].strip(), fields[1].strip()
            passage_field = "passage"
            if first and query.lower() == "query" and passage.lower() in _PAIR_PASSAGE_FIELDS:
                first = False
                continue  # header line
        first = False
        if not query:
            raise InputError("query is empty; every pair needs a query text", file=name, line=lineno, field="query")
        if not passage:
            raise InputError(
                "passage is empty; every pair needs a passage text", file=name, line=lineno, field=passage_field
            )
        pairs.append((query, passage))
    return pairs


def _plain_text(record: dict, field: str, name: str, lineno: int) -> str:
    if field not in record:
        raise InputError(
            'missing: each record needs a passage under "passage", "text" or "document"',
            file=name,
            line=lineno,
            field=field,
        )
    value = record[field]
    if not isinstance(value, str):
        raise InputError(f"must be a string, got {json.dumps(value)[:60]}", file=name, line=lineno, field=field)
    return value.strip()


# -- embeddings in Parquet -------------------------------------------------------------------------------------

METADATA_KEY = b"qcompress"
COLUMNS = ("angles", "vectors")
# The fields that identify the model that produced a file; two files are comparable only if these agree.
MODEL_FIELDS = ("encoder", "head", "dim", "similarity")
DEFAULT_ROW_GROUP_SIZE = 16384
_PART = re.compile(r"^part-(\d{6})\.parquet$")
_ANGLE_TOLERANCE = 1e-4  # float32 rounding of tanh*pi/2+pi/2 can step a hair outside [0, pi]


def partial_path(path: PathLike) -> Path:
    """Where `EmbeddingWriter` keeps its finished parts until `close()`: the folder `PATH.partial`."""
    return Path(str(path) + ".partial")


def _schema(dim: int, encoding: str, column: str, metadata: dict) -> pa.Schema:
    value_type = pa.uint8() if encoding == "uint8" else pa.float32()
    return pa.schema(
        [pa.field("id", pa.string(), nullable=False), pa.field(column, pa.list_(value_type, dim), nullable=False)],
        metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)},
    )


def _differences(a: Mapping, b: Mapping, keys: Iterable[str] | None = None) -> list[str]:
    keys = sorted(set(a) | set(b)) if keys is None else list(keys)
    return [f'{k} {json.dumps(a.get(k))} vs {json.dumps(b.get(k))}' for k in keys if a.get(k) != b.get(k)]


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
        if not self.partial.is_dir():
            raise InputError(
                "exists but is not a folder of parts written by qcompress; delete it or run without --resume",
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
                    f"unexpected file {entry.name!r} in the resume folder; delete the folder or run without --resume",
                    file=self.partial,
                )
            parts.append((int(match.group(1)), entry))
        for expected, (index, entry) in enumerate(parts):
            if index != expected:
                raise InputError(
                    f"part {expected:06d} is missing from the resume folder (found {entry.name}); "
                    "delete the folder or run without --resume",
                    file=self.partial,
                )
            try:
                info = pq.ParquetFile(entry)
            except (pa.ArrowException, OSError) as err:
                raise InputError(
                    f"cannot read part ({err}); delete the folder or run without --resume", file=entry
                ) from None
            raw = (info.schema_arrow.metadata or {}).get(METADATA_KEY)
            found = json.loads(raw) if raw else {}
            diff = _differences(found, self.metadata)
            if diff:
                raise InputError(
                    "cannot resume: the earlier run wrote different settings ("
                    + "; ".join(diff)
                    + "). Use the same model and options, or run without --resume to start over",
                    file=self.partial,
                )
            self.rows_written += info.metadata.num_rows
            if info.metadata.num_rows:
                last_part = info
        if self.rows_written:
            ids = last_part.read(columns=["id"]).column("id")
            self.last_id = ids[len(ids) - 1].as_py()
        self._parts = len(parts)

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
            if array.size and (array.min() < -_ANGLE_TOLERANCE or array.max() > math.pi + _ANGLE_TOLERANCE):
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


@dataclass
class Embeddings:
    """Embeddings read from a qcompress Parquet file: ids, float32 values (angles decoded), the file's metadata."""

    ids: list[str]
    values: Tensor
    metadata: dict
    encoding: str

    @property
    def dim(self) -> int:
        return int(self.metadata["dim"])

    @property
    def column(self) -> str:
        return self.metadata["column"]

    def __len__(self) -> int:
        return len(self.ids)


def _embedding_files(path: PathLike) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.glob("*.parquet") if f.is_file())
        if not files:
            raise InputError("folder holds no *.parquet files; expected embeddings from `qcompress compress`", file=p)
        return files
    if not p.exists():
        hint = " (an interrupted run left PATH.partial: rerun with --resume)" if partial_path(p).exists() else ""
        raise InputError(f"file not found; check the path{hint}", file=p)
    return [p]


def _file_metadata(file: Path) -> tuple[dict, pa.Schema]:
    try:
        schema = pq.read_schema(file)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"not a readable Parquet file ({err})", file=file) from None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise InputError(
            "has no qcompress metadata: it was not written by `qcompress compress`, so the model that made it "
            "is unknown; compress the texts with qcompress",
            file=file,
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise InputError(
            "qcompress metadata is not valid JSON; rewrite the file with `qcompress compress`", file=file
        ) from None
    if not isinstance(meta, dict):
        raise InputError(
            "qcompress metadata is not a JSON object; rewrite the file with `qcompress compress`", file=file
        )
    encoding, column, dim = meta.get("encoding"), meta.get("column"), meta.get("dim")
    if encoding not in ENCODINGS:
        raise InputError(
            f"unknown encoding {encoding!r} in metadata; expected one of {', '.join(ENCODINGS)}",
            file=file,
            field="encoding",
        )
    if column not in COLUMNS:
        raise InputError(
            f"unknown column {column!r} in metadata; expected one of {', '.join(COLUMNS)}", file=file, field="column"
        )
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise InputError(f"dim in metadata must be a positive integer, got {dim!r}", file=file, field="dim")
    names = schema.names
    id_type = schema.field("id").type if "id" in names else None
    if id_type is None or not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type)):
        raise InputError("missing or non-string `id` column; expected id: string", file=file, field="id")
    if column not in names:
        raise InputError(f"missing column `{column}` named by the metadata", file=file, field=column)
    value_type = pa.uint8() if encoding == "uint8" else pa.float32()
    found = schema.field(column).type
    if not (pa.types.is_fixed_size_list(found) and found.list_size == dim and found.value_type == value_type):
        raise InputError(
            f"wrong column type {found}; expected fixed_size_list<{value_type}>[{dim}] for {encoding} encoding",
            file=file,
            field=column,
        )
    return meta, schema


def _dataset_metadata(files: list[Path]) -> dict:
    first, _ = _file_metadata(files[0])
    for file in files[1:]:
        meta, _ = _file_metadata(file)
        diff = _differences(
            {k: v for k, v in first.items() if k != "qcompress_version"},
            {k: v for k, v in meta.items() if k != "qcompress_version"},
        )
        if diff:
            raise InputError(
                f"metadata differs from {files[0].name} ({'; '.join(diff)}); a folder must hold files of one "
                "model and encoding",
                file=file,
            )
    return first


def read_embedding_metadata(path: PathLike) -> dict:
    """The `qcompress` metadata of an embedding file or folder (checked identical across the folder's files)."""
    return _dataset_metadata(_embedding_files(path))


def _decode(table: pa.Table, meta: dict, file: Path, first_row: int) -> tuple[list[str], Tensor]:
    column, dim = meta["column"], int(meta["dim"])
    id_column = table.column("id")
    if id_column.null_count:
        raise InputError(f"{id_column.null_count} row(s) have no id", file=file, field="id")
    ids = id_column.to_pylist()
    col = table.column(column).combine_chunks()
    if col.null_count or (len(col) and col.flatten().null_count):
        raise InputError("missing (null) values; every row needs all its numbers", file=file, field=column)
    flat = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), dim)
    if meta["encoding"] == "uint8":
        values = torch.from_numpy(dequantize_angles(flat))
    else:
        values = torch.from_numpy(np.array(flat, dtype=np.float32))
        finite = torch.isfinite(values).all(dim=1)
        if not finite.all():
            row = int((~finite).nonzero()[0])
            raise InputError(
                f'row {first_row + row + 1} (id "{ids[row]}") has NaN or infinite values', file=file, field=column
            )
        if column == "angles" and values.numel():
            low, high = float(values.min()), float(values.max())
            if low < -_ANGLE_TOLERANCE or high > math.pi + _ANGLE_TOLERANCE:
                raise InputError(
                    f"angles must be radians in [0, pi], found values in [{low:.4g}, {high:.4g}]",
                    file=file,
                    field=column,
                )
    return ids, values


def iter_embedding_batches(path: PathLike) -> Iterator[tuple[list[str], Tensor]]:
    """Stream (ids, float32 values) one Parquet row group at a time, file by file (a folder: sorted by name).

    For corpora larger than memory. The metadata is checked up front (use `read_embedding_metadata` to see it);
    ids are not checked for duplicates across batches (`read_embeddings` does).
    """
    files = _embedding_files(path)
    meta = _dataset_metadata(files)
    return _iter_batches(files, meta)


def _iter_batches(files: list[Path], meta: dict) -> Iterator[tuple[list[str], Tensor]]:
    for file in files:
        reader = pq.ParquetFile(file)
        row = 0
        for group in range(reader.num_row_groups):
            table = reader.read_row_group(group, columns=["id", meta["column"]])
            yield _decode(table, meta, file, row)
            row += table.num_rows


def read_embeddings(path: PathLike) -> Embeddings:
    """Read a qcompress embedding file, or a folder of them (one dataset, files sorted by name), into memory.

    Angles stored as uint8 codes are decoded to float32 code/255*pi. Raises `InputError` for files not written by
    qcompress, wrong column types, NaN values, angles outside [0, pi], differing metadata in a folder, and
    duplicate ids.
    """
    files = _embedding_files(path)
    meta = _dataset_metadata(files)
    ids: list[str] = []
    chunks: list[Tensor] = []
    seen: dict[str, tuple[Path, int]] = {}
    for file in files:
        table = pq.read_table(file, columns=["id", meta["column"]])
        file_ids, values = _decode(table, meta, file, 0)
        for row, doc_id in enumerate(file_ids, 1):
            if doc_id in seen:
                where = seen[doc_id]
                raise InputError(
                    f'duplicate id "{doc_id}" in row {row} (first in {where[0].name}, row {where[1]}); '
                    "ids must be unique",
                    file=file,
                    field="id",
                )
            seen[doc_id] = (file, row)
        ids.extend(file_ids)
        chunks.append(values)
    values = torch.cat(chunks) if chunks else torch.empty(0, int(meta["dim"]))
    return Embeddings(ids=ids, values=values, metadata=meta, encoding=meta["encoding"])


def check_same_model(
    meta_a: Mapping[str, Any], meta_b: Mapping[str, Any], *, what: str = "the two embedding files"
) -> None:
    """Raise `InputError` unless both metadata name the same model (encoder, head, dim, similarity, model_id).

    `model_id` is compared only when both have one; encoding and qcompress version may differ (a uint8 file
    compares fine with a float32 file of the same model).

    Example:
        >>> m = {"encoder": "minilm", "head": "quantum", "dim": 128, "similarity": "fidelity"}
        >>> check_same_model(m, dict(m, encoding="uint8"))
        >>> check_same_model(m, dict(m, dim=64))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        qcompress.errors.InputError: field "dim": the two embedding files come from different models (dim 128 ...
    """
    keys = list(MODEL_FIELDS)
    if "model_id" in meta_a and "model_id" in meta_b:
        keys.append("model_id")
    norm_a = {k: _normalise(k, meta_a.get(k)) for k in keys}
    norm_b = {k: _normalise(k, meta_b.get(k)) for k in keys}
    diff = [k for k in keys if norm_a[k] != norm_b[k]]
    if diff:
        details = "; ".join(f"{k} {json.dumps(meta_a.get(k))} vs {json.dumps(meta_b.get(k))}" for k in diff)
        raise InputError(
            f"{what} come from different models ({details}); compress both with the same model", field=diff[0]
        )


def _normalise(key: str, value: Any) -> Any:
    if key == "dim" and isinstance(value, (int, float, str)) and str(value).isdigit():
        return int(value)
    return value


# -- TREC runs and qrels ---------------------------------------------------------------------------------------


def _id_key(value: str) -> tuple[int, int | str]:
    """Numeric ids in numeric order, then the others as strings (only for a deterministic, readable order)."""
    return (0, int(value)) if value.isdigit() else (1, value)


def _run_lines(run: Mapping[str, Mapping[str, float]], tag: str, top_k: int | None) -> Iterator[str]:
    if not tag or _WHITESPACE.search(tag):
        raise ValueError(f"run tag must be a non-empty word without whitespace, got {tag!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    for qid in sorted(run, key=_id_key):
        if not qid or _WHITESPACE.search(qid):
            raise ValueError(f"query id {qid!r} is empty or contains whitespace; it cannot go into a TREC run")
        scored = []
        for docid, score in run[qid].items():
            if not docid or _WHITESPACE.search(docid):
                raise ValueError(f"doc id {docid!r} is empty or contains whitespace; it cannot go into a TREC run")
            score = float(score)
            if not math.isfinite(score):
                raise ValueError(f"score of query {qid!r}, doc {docid!r} is {score}; scores must be finite")
            scored.append((score, docid))
        scored.sort(key=lambda item: (-item[0], item[1]))
        if top_k is not None:
            scored = scored[:top_k]
        for rank, (score, docid) in enumerate(scored, 1):
            # repr: the shortest text that reads back as the same float, so no new ties appear.
            yield f"{qid} Q0 {docid} {rank} {score!r} {tag}\n"


def write_run(
    path_or_stream: PathLike | IO[str],
    run: Mapping[str, Mapping[str, float]],
    tag: str,
    *,
    top_k: int | None = None,
) -> None:
    """Write a TREC run: lines `qid Q0 docid rank score tag`, by score descending (ties: doc id ascending).

    `path_or_stream` is a path (written atomically), "-" (stdout) or an open text stream. `top_k` keeps the
    best k documents per query.

    Example:
        >>> write_run(sys.stdout, {"1": {"d2": 0.5, "d1": 0.9, "d3": 0.5}}, "qc", top_k=2)
        1 Q0 d1 1 0.9 qc
        1 Q0 d2 2 0.5 qc
    """
    lines = list(_run_lines(run, tag, top_k))  # validate everything before touching the output
    if hasattr(path_or_stream, "write"):
        path_or_stream.writelines(lines)  # type: ignore[union-attr]
        return
    if str(path_or_stream) == STDIN:
        sys.stdout.writelines(lines)
        return
    with atomic_file(path_or_stream) as tmp:  # type: ignore[arg-type]
        with open(tmp, "w", encoding="utf-8") as out:
            out.writelines(lines)


def read_run(path: PathLike) -> dict[str, dict[str, float]]:
    """Read a TREC run (`qid Q0 docid rank score tag`, whitespace-separated) into {qid: {docid: score}}."""
    name = _display(path)
    run: dict[str, dict[str, float]] = {}
    seen: dict[tuple[str, str], int] = {}
    for lineno, line in _open_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise InputError(
                f"expected 6 whitespace-separated fields `qid Q0 docid rank score tag`, got {len(fields)}",
                file=name,
                line=lineno,
            )
        qid, _, docid, _, score_text, _ = fields
        try:
            score = float(score_text)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise InputError(
                f"score {score_text!r} is not a finite number", file=name, line=lineno, field="score"
            )
        if (qid, docid) in seen:
            raise InputError(
                f'query "{qid}" lists doc "{docid}" twice (first on line {seen[qid, docid]})',
                file=name,
                line=lineno,
                field="docid",
            )
        seen[qid, docid] = lineno
        run.setdefault(qid, {})[docid] = score
    return run


_BEIR_HEADER = ("query-id", "corpus-id", "score")


def iter_qrels(path: PathLike) -> Iterator[tuple[str, str, int, int]]:
    """Stream (qid, docid, grade, line number) from TREC qrels (`qid 0 docid rel`) or BEIR qrels
    (`query-id<TAB>corpus-id<TAB>score`, header optional); the format is detected from the first line."""
    name = _display(path)
    return _iter_qrels(name, _open_lines(path))


def _iter_qrels(name: str, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[str, str, int, int]]:
    width = None
    for lineno, line in lines:
        fields = line.split()
        if not fields:
            continue
        if width is None:
            if tuple(f.lower() for f in fields) == _BEIR_HEADER:
                width = 3
                continue
            if len(fields) not in (3, 4):
                raise InputError(
                    f"got {len(fields)} fields; expected TREC qrels `qid 0 docid rel` (4 fields) or BEIR qrels "
                    "`query-id corpus-id score` (3 fields, tab-separated, with that header)",
                    file=name,
                    line=lineno,
                )
            width = len(fields)
        if len(fields) != width:
            layout = "`qid 0 docid rel`" if width == 4 else "`query-id corpus-id score`"
            raise InputError(
                f"got {len(fields)} fields; expected {width} like the first line, {layout}", file=name, line=lineno
            )
        qid, docid, grade_text = (fields[0], fields[2], fields[3]) if width == 4 else fields
        try:
            grade_value = float(grade_text)
        except ValueError:
            grade_value = math.nan
        if not grade_value.is_integer():
            layout = "`qid 0 docid rel`" if width == 4 else "`query-id corpus-id score`"
            raise InputError(
                f"relevance grade {grade_text!r} is not an integer; expected lines {layout}",
                file=name,
                line=lineno,
                field="rel" if width == 4 else "score",
            )
        yield qid, docid, int(grade_value), lineno


def read_qrels(path: PathLike) -> dict[str, dict[str, int]]:
    """Read relevance judgements into {qid: {docid: grade}} from TREC or BEIR qrels (auto-detected).

    A pair judged twice with the same grade is accepted; with different grades it is an error naming both lines.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "qrels.tsv"
        >>> _ = p.write_text("query-id\\tcorpus-id\\tscore\\nq1\\td1\\t2\\n")
        >>> read_qrels(p)
        {'q1': {'d1': 2}}
    """
    name = _display(path)
    qrels: dict[str, dict[str, int]] = {}
    lines_of: dict[tuple[str, str], int] = {}
    for qid, docid, grade, lineno in iter_qrels(path):
        judged = qrels.setdefault(qid, {})
        if docid in judged and judged[docid] != grade:
            raise InputError(
                f'query "{qid}", doc "{docid}" is judged {grade} here and {judged[docid]} on line '
                f"{lines_of[qid, docid]}; keep one judgement",
                file=name,
                line=lineno,
            )
        judged[docid] = grade
        lines_of[qid, docid] = lineno
    return qrels
