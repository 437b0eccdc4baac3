"""The embedding Parquet format (SPEC §6), and its one reader: a stream of checked batches.

An embedding file is Parquet with an `id` string column and either `angles` (fixed-size list of float32 radians in
[0, pi], or of uint8 codes round(theta/pi*255), see `qcompress.quantization`), `codes` (low-bit angle codes, SPEC
§7: `fixed_size_binary` of ceil(dim * bits / 8) bytes, packed LSB first, decoded with the levels that the metadata's
`codes` object holds, `qcompress.codes.AngleCodes.to_metadata`) or `vectors` (float32, cosine models), and
optionally the `text` each row was made from (`qcompress compress --store-text`). The file's key-value metadata
(`qcompress.formats.metadata`: one `qcompress.FIELD` key per field, or one JSON object under `qcompress` in older
files) names the model (encoder, head, dim, similarity, ...) and the encoding, so that two files from different
models are never scored against each other. Lists of the right length (`list<float>`, as pandas and DuckDB write
them back) read as the fixed-size lists qcompress writes (`qcompress.formats.columns`). A dataset is one such file,
or a folder of them (read in name order) with the same metadata.

Every read goes through `scan_embeddings`, which checks the metadata up front and each batch as it is read (null ids
or values, NaN or infinite numbers, angles outside [0, pi], corrupt codes, duplicate ids, damaged files), naming the
file, the row and the id.
`read_embeddings` (all in memory), `iter_embedding_batches` and `qcompress.search.search_parquet` use it.
`qcompress.formats.writer.EmbeddingWriter` writes the format.

Example:
    >>> import tempfile, pathlib
    >>> import pyarrow as pa, pyarrow.parquet as pq
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "emb.parquet"
    >>> angles = pa.FixedSizeListArray.from_arrays(pa.array([0.0, 1.5, 3.0, 0.5], pa.float32()), 2)
    >>> meta = {"encoder": "minilm", "head": "quantum", "dim": 2, "similarity": "fidelity",
    ...         "encoding": "float32", "column": "angles"}
    >>> table = pa.table({"id": ["a", "b"], "angles": angles})
    >>> pq.write_table(table.replace_schema_metadata(to_key_values(meta)), path)
    >>> read_embeddings(path).values
    tensor([[0.0000, 1.5000],
            [3.0000, 0.5000]])
    >>> meta, batches = scan_embeddings(path, batch_rows=1)
    >>> [(batch.first_row, batch.ids.to_pylist()) for batch in batches]
    [(0, ['a']), (1, ['b'])]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor

from qcompress.codes import AngleCodes
from qcompress.errors import InputError
from qcompress.formats.columns import accepts, is_text, to_fixed, type_name
from qcompress.formats.ids import BAD_ID_CHARACTERS, UniqueIds, id_problem
from qcompress.formats.lines import PathLike
from qcompress.formats.metadata import (
    CODES, DESCRIPTIVE_FIELDS, METADATA_KEY, MODEL_FIELDS, check_same_model, codec_of, metadata_differences,
    read_metadata, to_key_values,
)
from qcompress.quantization import ENCODINGS, dequantize_angles

__all__ = [
    "METADATA_KEY",
    "MODEL_FIELDS",
    "COLUMNS",
    "CODES",
    "TEXT_COLUMN",
    "has_texts",
    "EmbeddingBatch",
    "Embeddings",
    "partial_path",
    "scan_embeddings",
    "read_embeddings",
    "read_embedding_metadata",
    "count_embedding_rows",
    "read_texts_by_id",
    "iter_embedding_batches",
    "check_same_model",
    "codec_of",
    "column_type",
]

COLUMNS = ("angles", "vectors", "codes")
FILE_ENCODINGS = (*ENCODINGS, CODES)
TEXT_COLUMN = "text"  # optional: the text of each row (compress --store-text)
ANGLE_TOLERANCE = 1e-4  # float32 rounding of tanh*pi/2+pi/2 can step a hair outside [0, pi]


def partial_path(path: PathLike) -> Path:
    """Where `EmbeddingWriter` keeps its finished parts until `close()`: the folder `PATH.partial`."""
    return Path(str(path) + ".partial")


def value_type(encoding: str) -> pa.DataType:
    """The Arrow type of one stored number: uint8 codes or float32."""
    return pa.uint8() if encoding == "uint8" else pa.float32()


def column_type(encoding: str, dim: int, codec: AngleCodes | None = None) -> pa.DataType:
    """The Arrow type of the values column: `fixed_size_binary` of a code's bytes for low-bit codes (their
    `codec`), else a fixed-size list of `dim` float32 or uint8 numbers.

    Example:
        >>> column_type("codes", 128, AngleCodes.uniform(128, 4)), column_type("uint8", 3)
        (FixedSizeBinaryType(fixed_size_binary[64]), FixedSizeListType(fixed_size_list<item: uint8>[3]))
    """
    if encoding == CODES:
        return pa.binary(codec.bytes_per_vector)
    return pa.list_(value_type(encoding), dim)


# -- the dataset's files and metadata ----------------------------------------------------------------------------


def _embedding_files(path: PathLike) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.glob("*.parquet") if f.is_file())
        if not files:
            raise InputError("folder holds no *.parquet files; expected embeddings from `qcompress compress`", file=p)
        return files
    if not p.exists():
        hint = " (an interrupted run left PATH.partial: rerun it and resume)" if partial_path(p).exists() else ""
        raise InputError(f"file not found; check the path{hint}", file=p)
    return [p]


def _file_metadata(file: Path) -> dict:
    try:
        schema = pq.read_schema(file)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"not a readable Parquet file ({err})", file=file) from None
    meta = read_metadata(schema.metadata, file)
    _check_schema(schema, meta, file)
    return meta


def _check_schema(schema: pa.Schema, meta: dict, file: Path) -> None:
    """The metadata names a known encoding, column and dim, and the columns have the types it implies."""
    encoding, column, dim = meta.get("encoding"), meta.get("column"), meta.get("dim")
    if encoding not in FILE_ENCODINGS:
        raise InputError(
            f"unknown encoding {encoding!r} in metadata; expected one of {', '.join(FILE_ENCODINGS)}",
            file=file,
            field="encoding",
        )
    if column not in COLUMNS:
        raise InputError(
            f"unknown column {column!r} in metadata; expected one of {', '.join(COLUMNS)}", file=file, field="column"
        )
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise InputError(f"dim in metadata must be a positive integer, got {dim!r}", file=file, field="dim")
    if (encoding == CODES) != (column == CODES):
        raise InputError(f"encoding {encoding!r} with column {column!r}: low-bit codes are stored in the column "
                         f"`{CODES}`, and only they are", file=file, field="column")
    codec = codec_of(meta, file)
    if codec is not None and codec.dim != dim:
        raise InputError(f"the codes describe {codec.dim} qubits, but dim is {dim}", file=file, field=CODES)
    names = schema.names
    id_type = schema.field("id").type if "id" in names else None
    if id_type is None or not is_text(id_type):
        raise InputError("missing or non-string `id` column; expected id: string", file=file, field="id")
    if column not in names:
        raise InputError(f"missing column `{column}` named by the metadata", file=file, field=column)
    if TEXT_COLUMN in names:
        text_type = schema.field(TEXT_COLUMN).type
        if not is_text(text_type):
            raise InputError(f"wrong column type {text_type}; expected string", file=file, field=TEXT_COLUMN)
    expected, found = column_type(encoding, dim, codec), schema.field(column).type
    if not accepts(found, expected):  # a DataFrame's list<float> passes; each row's length is checked as read
        what = f"{codec.bits}-bit codes of {dim} qubits" if codec is not None else f"{encoding} encoding"
        raise InputError(f"wrong column type {type_name(found)}; expected {type_name(expected)} for {what}", file=file,
                         field=column)


def _dataset_metadata(files: list[Path]) -> dict:
    first = _file_metadata(files[0])
    for file in files[1:]:
        meta = _file_metadata(file)
        diff = metadata_differences(
            {k: v for k, v in first.items() if k not in DESCRIPTIVE_FIELDS},
            {k: v for k, v in meta.items() if k not in DESCRIPTIVE_FIELDS},
        )
        if diff:
            raise InputError(
                f"metadata differs from {files[0].name} ({'; '.join(diff)}); a folder must hold files of one "
                "model and encoding",
                file=file,
            )
    return first


def read_texts_by_id(path: PathLike, ids: Iterable[str]) -> dict[str, str]:
    """The stored `text` of the rows whose id is in `ids` (one pass over the id and text columns only)."""
    import pyarrow.compute as pc

    wanted = pa.array(sorted(set(ids)), pa.string())
    found: dict[str, str] = {}
    for file in _embedding_files(path):
        try:
            for batch in pq.ParquetFile(file).iter_batches(columns=["id", TEXT_COLUMN]):
                hit = pc.is_in(batch.column(0), value_set=wanted)
                if pc.any(hit).as_py():
                    rows = batch.filter(hit)
                    found.update(zip(rows.column(0).to_pylist(), rows.column(1).to_pylist()))
        except (pa.ArrowException, OSError) as err:
            raise InputError(f"cannot read the texts ({str(err).splitlines()[0]})", file=file) from None
    return found


def count_embedding_rows(path: PathLike) -> int:
    """Rows of an embedding file or folder, from the Parquet metadata (no data read)."""
    total = 0
    for file in _embedding_files(path):
        try:
            total += pq.ParquetFile(file).metadata.num_rows
        except (pa.ArrowException, OSError) as err:
            raise InputError(f"not a readable Parquet file ({err})", file=file) from None
    return total


def read_embedding_metadata(path: PathLike) -> dict:
    """The `qcompress` metadata of an embedding file or folder (checked identical across the folder's files)."""
    return _dataset_metadata(_embedding_files(path))


# -- the rows, batch by batch ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingBatch:
    """Consecutive rows of one file of an embedding dataset, checked."""

    file: Path
    first_row: int  # 0-based position of the batch's first row in `file`
    ids: pa.Array  # Arrow strings (`ids.to_pylist()` makes Python strings; searches only convert the winners)
    values: Tensor  # (rows, dim) float32, or the stored uint8 codes when scanned with keep_codes=True: 8-bit
    #                 codes (rows, dim), or low-bit codes packed (rows, codec.bytes_per_vector)
    texts: pa.Array | None = None  # Arrow strings, when scanned with texts=True
    codec: AngleCodes | None = None  # what decodes low-bit codes (`codec_of` the metadata); None for others


def scan_embeddings(
    path: PathLike,
    *,
    batch_rows: int | None = None,
    keep_codes: bool = False,
    unique: bool = False,
    texts: bool = False,
) -> tuple[dict, Iterator[EmbeddingBatch]]:
    """The metadata of an embedding file or folder (checked now) and its rows as checked batches (read lazily).

    Files come in name order; a batch holds `batch_rows` rows, or one Parquet row group when `batch_rows` is None.
    uint8 codes are decoded to float32 angles (`qcompress.quantization.DECODE`), and low-bit codes by the file's
    codec (`codec_of`, also on each batch), unless `keep_codes=True`, which leaves them uint8 (low-bit codes packed,
    a row's bytes) for a reader that decodes only what it uses. Raises `InputError` naming the file, row and id
    for null ids or values, NaN or infinite numbers, angles outside [0, pi], corrupt codes (a row setting a
    padding bit) and unreadable (damaged) data; with
    `unique=True` also for an id seen before (memory: ~32 bytes plus the id per row, `qcompress.formats.ids`).
    With `texts=True` each batch carries the `text` column (an `InputError` if the dataset has none). The module
    docstring shows an example.
    """
    if batch_rows is not None and (isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1):
        raise InputError(f"batch_rows must be a positive integer or None, got {batch_rows!r}")
    files = _embedding_files(path)
    meta = _dataset_metadata(files)
    if texts and not has_texts(files[0]):
        raise InputError(f"has no `{TEXT_COLUMN}` column; compress the texts with --store-text to keep them",
                         file=files[0], field=TEXT_COLUMN)
    batches = _scan(files, meta, batch_rows, keep_codes, texts)
    return meta, (_unique(batches) if unique else batches)


def has_texts(path: PathLike) -> bool:
    """Whether an embedding file (or a folder's first file) keeps the text of each row."""
    return TEXT_COLUMN in pq.read_schema(_embedding_files(path)[0]).names


def _scan(files: list[Path], meta: dict, batch_rows: int | None, keep_codes: bool,
          texts: bool) -> Iterator[EmbeddingBatch]:
    codec = codec_of(meta, files[0])
    for file in files:
        row = 0
        for ids, values, text in _arrow_batches(file, meta["column"], batch_rows, texts):
            if text is not None and text.null_count:
                bad = int(np.flatnonzero(text.is_null().to_numpy(zero_copy_only=False))[0])
                raise InputError(f'row {row + bad + 1} (id "{ids[bad].as_py()}") has no text (null)', file=file,
                                 field=TEXT_COLUMN)
            yield EmbeddingBatch(file, row, ids, _decode(ids, values, meta, file, row, keep_codes, codec), text, codec)
            row += len(ids)


def _unique(batches: Iterator[EmbeddingBatch]) -> Iterator[EmbeddingBatch]:
    """The batches, after checking that no id repeats one seen before (in this file or an earlier one)."""
    seen = UniqueIds()
    files: list[tuple[int, Path]] = []  # (position of the file's first row, file)
    position = 0
    for batch in batches:
        if not files or files[-1][1] != batch.file:
            files.append((position, batch.file))
        ids = batch.ids.to_pylist()
        duplicate = seen.add(ids, range(position, position + len(ids)))
        if duplicate is not None:
            index, earlier = duplicate
            start, first_file = next((s, f) for s, f in reversed(files) if s <= earlier)
            raise InputError(
                f'duplicate id "{ids[index]}" in row {batch.first_row + index + 1} (first in {first_file.name}, '
                f"row {earlier - start + 1}); ids must be unique",
                file=batch.file,
                field="id",
            )
        position += len(ids)
        yield batch


def _arrow_batches(
    file: Path, column: str, batch_rows: int | None, texts: bool = False
) -> Iterator[tuple[pa.Array, pa.Array, pa.Array | None]]:
    """(ids, values, texts or None) Arrow arrays of `file`, `batch_rows` rows at a time or one row group at a
    time. A file damaged after its metadata was read raises `InputError` naming it, not a traceback."""
    columns = ["id", column] + ([TEXT_COLUMN] if texts else [])
    try:
        reader = pq.ParquetFile(file)
        if texts and TEXT_COLUMN not in reader.schema_arrow.names:
            raise InputError(f"has no `{TEXT_COLUMN}` column, unlike the folder's first file", file=file,
                             field=TEXT_COLUMN)
        if batch_rows is not None:
            tables = (pa.Table.from_batches([b]) for b in reader.iter_batches(batch_size=batch_rows, columns=columns))
        else:
            tables = (reader.read_row_group(g, columns=columns) for g in range(reader.num_row_groups))
        for table in tables:
            got = [table.column(name).combine_chunks() for name in columns]
            got = [_plain_strings(array) if name != column else array for name, array in zip(columns, got)]
            yield got[0], got[1], got[2] if texts else None
    except (pa.ArrowException, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot read the file: it is damaged or truncated ({reason}); write it again",
                         file=file) from None


def _plain_strings(array: pa.Array) -> pa.Array:
    """Ids and texts as `string` (a DataFrame may have written `large_string`): what every consumer expects."""
    return array if pa.types.is_string(array.type) else array.cast(pa.string())


def _decode(ids: pa.Array, values: pa.Array, meta: dict, file: Path, first_row: int, keep_codes: bool,
            codec: AngleCodes | None) -> Tensor:
    """The batch's values as a (rows, dim) tensor, checked; `first_row` places the batch in the file."""
    column, dim = meta["column"], int(meta["dim"])
    if ids.null_count:
        row = first_row + int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0]) + 1
        raise InputError(f"row {row} has no id (null); every row needs one", file=file, field="id")
    bad = pc.or_(pc.equal(pc.binary_length(ids), 0), pc.match_substring_regex(ids, BAD_ID_CHARACTERS))
    if pc.any(bad).as_py():  # the rule every reader of ids applies (qcompress.formats.ids)
        index = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
        value = ids[index].as_py()
        raise InputError(f"row {first_row + index + 1} (id {value!r}) {id_problem(value)}; ids must not contain "
                         "whitespace or control characters (TREC run files are whitespace-separated)", file=file,
                         field="id")
    values = to_fixed(values, column_type(meta["encoding"], dim, codec), ids, file=file, column=column,
                      first_row=first_row)
    if codec is not None:
        return _decode_codes(ids, values, codec, file, first_row, keep_codes)
    flat = values.flatten()
    if values.null_count or flat.null_count:
        raise InputError("missing (null) values; every row needs all its numbers", file=file, field=column)
    array = flat.to_numpy(zero_copy_only=False).reshape(len(values), dim)
    if meta["encoding"] == "uint8":
        return torch.from_numpy(np.array(array, dtype=np.uint8) if keep_codes else dequantize_angles(array))
    decoded = torch.from_numpy(np.array(array, dtype=np.float32))  # a writable copy: torch tensors may be written
    if not decoded.numel() or _plausible(decoded.numpy(), column):
        return decoded
    finite = torch.isfinite(decoded).all(dim=1)
    if not finite.all():
        row = int((~finite).nonzero()[0])
        raise InputError(
            f'row {first_row + row + 1} (id "{ids[row].as_py()}") has NaN or infinite values', file=file, field=column
        )
    if column == "angles" and decoded.numel():
        _check_angle_range(decoded, ids, file, first_row)
    return decoded


def _decode_codes(ids: pa.Array, values: pa.Array, codec: AngleCodes, file: Path, first_row: int,
                  keep_codes: bool) -> Tensor:
    """A batch of packed low-bit codes (`fixed_size_binary`) as (rows, bytes) uint8, or decoded when not
    `keep_codes`; a null or corrupt row (a padding bit set: not what a codec packs) is an `InputError`."""
    if values.null_count:
        row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f'row {first_row + row + 1} (id "{ids[row].as_py()}") has no codes (null)', file=file,
                         field=CODES)
    width = codec.bytes_per_vector
    data = np.frombuffer(values.buffers()[1], dtype=np.uint8, count=(values.offset + len(values)) * width)
    codes = torch.from_numpy(data[values.offset * width :].reshape(len(values), width).copy())
    bad = codec.corrupt_row(codes)
    if bad is not None:
        raise InputError(f'row {first_row + bad + 1} (id "{ids[bad].as_py()}") sets unused bits of its last byte: '
                         f"not {codec.bits}-bit codes of {codec.dim} qubits (a corrupt code column)", file=file,
                         field=CODES)
    return codes if keep_codes else codec.decode(codes)


def _plausible(values: np.ndarray, column: str) -> bool:
    """True when every value is finite (and, for angles, in [0, pi]): two vectorised passes, no temporaries. NaN
    makes min and max NaN, so one NaN anywhere fails the test; the caller then finds the row to name."""
    low, high = float(values.min()), float(values.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        return False
    return column != "angles" or (low >= -ANGLE_TOLERANCE and high <= math.pi + ANGLE_TOLERANCE)


def _check_angle_range(angles: Tensor, ids: pa.Array, file: Path, first_row: int) -> None:
    low, high = (float(x) for x in torch.aminmax(angles))
    if low >= -ANGLE_TOLERANCE and high <= math.pi + ANGLE_TOLERANCE:
        return
    wide = angles.double()  # the bounds compared in float64, as for low and high above
    outside = (wide < -ANGLE_TOLERANCE) | (wide > math.pi + ANGLE_TOLERANCE)
    row, col = (int(i) for i in outside.nonzero()[0])
    raise InputError(
        f'row {first_row + row + 1} (id "{ids[row].as_py()}"): angles must be radians in [0, pi], '
        f"found {float(angles[row, col]):.4g}",
        file=file,
        field="angles",
    )


# -- readers -----------------------------------------------------------------------------------------------------


@dataclass
class Embeddings:
    """Embeddings read from a qcompress Parquet file: ids, float32 values (angles decoded), the file's metadata."""

    ids: list[str]
    values: Tensor
    metadata: dict
    encoding: str
    texts: list[str] | None = None  # the rows' texts, when the file keeps them and they were asked for

    @property
    def dim(self) -> int:
        return int(self.metadata["dim"])

    @property
    def column(self) -> str:
        return self.metadata["column"]

    @property
    def codec(self) -> AngleCodes | None:
        """The codec of a file of low-bit codes (`values` holds their decoded angles), else None."""
        return codec_of(self.metadata)

    def __len__(self) -> int:
        return len(self.ids)


def iter_embedding_batches(path: PathLike) -> Iterator[tuple[list[str], Tensor]]:
    """Stream (ids, float32 values) one Parquet row group at a time, file by file (a folder: sorted by name).

    For corpora larger than memory. The metadata is checked up front (use `read_embedding_metadata` to see it);
    ids are not checked for duplicates across batches (`read_embeddings` does).
    """
    _, batches = scan_embeddings(path)
    return ((batch.ids.to_pylist(), batch.values) for batch in batches)


def read_embeddings(path: PathLike, *, texts: bool = False) -> Embeddings:
    """Read a qcompress embedding file, or a folder of them (one dataset, files sorted by name), into memory.

    Angles stored as uint8 codes are decoded to float32 code/255*pi, low-bit codes to their levels. Raises `InputError`
    for files not written by qcompress, wrong column types, NaN values, angles outside [0, pi], corrupt codes,
    differing metadata in a folder, and duplicate ids. With `texts=True`, `Embeddings.texts` holds the `text` column
    (an error if there is none).
    """
    meta, batches = scan_embeddings(path, unique=True, texts=texts)
    ids: list[str] = []
    chunks: list[Tensor] = []
    text_list: list[str] | None = [] if texts else None
    for batch in batches:
        ids.extend(batch.ids.to_pylist())
        chunks.append(batch.values)
        if text_list is not None:
            text_list.extend(batch.texts.to_pylist())
    values = torch.cat(chunks) if chunks else torch.empty(0, int(meta["dim"]))
    return Embeddings(ids=ids, values=values, metadata=meta, encoding=meta["encoding"], texts=text_list)
