"""`copy_metadata`: put an embedding file's metadata back on a copy that a DataFrame round trip stripped of it.

pandas, polars and DuckDB read a qcompress file's rows but write them back without its key-value metadata (and
pandas and DuckDB turn the fixed-size lists into `list<float>`), so `qcompress score` no longer knows which model
made them. `copy_metadata(SOURCE, COPY)` checks that COPY holds SOURCE's rows, then writes COPY again with
SOURCE's metadata (in the split layout of `qcompress.formats.metadata`) and the column types qcompress writes:

- the columns: a string `id`, and the values column SOURCE's metadata names, of its encoding (float32 angles or
  vectors, uint8 codes, low-bit codes as binary), every row `dim` numbers long (or the codes' bytes);
- the rows: every id of COPY is an id of SOURCE, once, and its values are exactly SOURCE's for that id. A copy may
  hold fewer rows (a filtered DataFrame) in any order, never a row SOURCE does not have, nor changed values.

SOURCE is read a batch at a time (`scan_embeddings`); COPY is held in memory (it is rewritten whole). Other
columns of COPY (a DataFrame's index, the user's own) are kept, and so is its other key-value metadata (pandas').
The output is written atomically: to OUTPUT, or over COPY itself.

Example:
    >>> import tempfile, pathlib, pandas as pd
    >>> from qcompress.formats import EmbeddingWriter, read_embeddings
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with EmbeddingWriter(folder / "c.parquet", dim=2, metadata={"similarity": "fidelity"}) as w:
    ...     w.write(["a", "b", "c"], np.array([[0.5, 1.0], [1.5, 2.0], [2.5, 3.0]], np.float32))
    >>> frame = pd.read_parquet(folder / "c.parquet")
    >>> frame[frame.id != "b"].to_parquet(folder / "copy.parquet")       # list<float>, and no qcompress metadata
    >>> copy_metadata(folder / "c.parquet", folder / "copy.parquet")
    Copied(rows=2, source_rows=3)
    >>> read_embeddings(folder / "copy.parquet").ids
    ['a', 'c']
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from qcompress.atomic import atomic_file
from qcompress.errors import InputError
from qcompress.formats.columns import accepts, is_text, to_fixed, type_name
from qcompress.formats.embeddings import TEXT_COLUMN, column_type, read_embedding_metadata, scan_embeddings
from qcompress.formats.lines import PathLike
from qcompress.formats.metadata import PREFIX, METADATA_KEY, codec_of, describe_values, to_key_values

__all__ = ["copy_metadata", "Copied"]


class Copied(NamedTuple):
    """What `copy_metadata` wrote: the copy's rows, and how many rows the source has."""

    rows: int
    source_rows: int


def _read_copy(copy: Path) -> pa.Table:
    if not copy.is_file():
        raise InputError("file not found; check the path", file=copy)
    try:
        return pq.read_table(copy)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"not a readable Parquet file ({str(err).splitlines()[0]})", file=copy) from None


def _stored(values: pa.Array) -> np.ndarray:
    """Fixed-size values as a (rows, width) array of what is stored: numbers, or a code's bytes."""
    if pa.types.is_fixed_size_binary(values.type):
        width = values.type.byte_width
        data = np.frombuffer(values.buffers()[1], dtype=np.uint8, count=(values.offset + len(values)) * width)
        return data[values.offset * width :].reshape(len(values), width)
    return values.flatten().to_numpy(zero_copy_only=False).reshape(len(values), values.type.list_size)


def _checked_columns(table: pa.Table, meta: dict, copy: Path) -> tuple[pa.Array, pa.Array]:
    """The copy's ids (string) and values (the fixed-size type of SOURCE's encoding), checked."""
    column, expected = meta["column"], column_type(meta["encoding"], int(meta["dim"]), codec_of(meta))
    if "id" not in table.column_names or not is_text(table.schema.field("id").type):
        raise InputError("missing or non-string `id` column; expected id: string", file=copy, field="id")
    if column not in table.column_names:
        raise InputError(f"has no `{column}` column, which the source's metadata names", file=copy, field=column)
    found = table.schema.field(column).type
    if not accepts(found, expected):
        raise InputError(f"wrong column type {type_name(found)}; the source stores {meta['encoding']} "
                         f"{column} as {type_name(expected)}", file=copy, field=column)
    ids = table.column("id").combine_chunks().cast(pa.string())
    values = table.column(column).combine_chunks()
    for name, array in (("id", ids), (column, values)):
        if array.null_count:
            row = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0]) + 1
            raise InputError(f"row {row} has no {name} (null)", file=copy, field=name)
    return ids, to_fixed(values, expected, ids, file=copy, column=column)


def _match(source: PathLike, ids: pa.Array, values: np.ndarray, copy: Path, column: str) -> int:
    """Check that every row of the copy is a row of SOURCE with the same values; SOURCE's row count."""
    position: dict[str, int] = {}
    for row, doc_id in enumerate(ids.to_pylist()):
        if position.setdefault(doc_id, row) != row:
            raise InputError(f'duplicate id "{doc_id}" in row {row + 1} (first in row {position[doc_id] + 1}); ids '
                             "must be unique", file=copy, field="id")
    found = np.zeros(len(ids), dtype=bool)
    source_rows = 0
    _, batches = scan_embeddings(source, keep_codes=True)
    for batch in batches:
        source_rows += len(batch.ids)
        hit = pc.is_in(batch.ids, value_set=ids).to_numpy(zero_copy_only=False)
        if not hit.any():
            continue
        rows = np.array([position[i] for i in batch.ids.filter(pa.array(hit)).to_pylist()])
        same = (values[rows] == batch.values.numpy()[hit]).all(axis=1)
        if not same.all():
            row = int(rows[np.flatnonzero(~same)[0]])
            raise InputError(f'row {row + 1} (id "{ids[row].as_py()}"): its values differ from the source\'s row '
                             f"with that id; the copy was changed, or comes from another file", file=copy,
                             field=column)
        found[rows] = True
    if not found.all():
        row = int(np.flatnonzero(~found)[0])
        raise InputError(f'row {row + 1} (id "{ids[row].as_py()}") is not in {source}; a copy holds the source\'s '
                         "rows (all or some, in any order) and no others", file=copy, field="id")
    return source_rows


def copy_metadata(source: PathLike, copy: PathLike, output: PathLike | None = None) -> Copied:
    """Write `copy` (to `output`, default: over `copy`) with the metadata of the embedding file or folder
    `source`, after checking that it holds source's rows (module docstring); `InputError` names the file, row and
    field of what does not fit, and nothing is written then."""
    copy = Path(copy)
    meta = read_embedding_metadata(source)
    table = _read_copy(copy)
    ids, values = _checked_columns(table, meta, copy)
    source_rows = _match(source, ids, _stored(values), copy, meta["column"])
    columns = {name: table.column(name) for name in table.column_names}
    columns["id"], columns[meta["column"]] = ids, values
    if TEXT_COLUMN in columns and is_text(columns[TEXT_COLUMN].type):
        columns[TEXT_COLUMN] = columns[TEXT_COLUMN].cast(pa.string())
    others = {key: value for key, value in (table.schema.metadata or {}).items()
              if key != METADATA_KEY and not key.startswith(PREFIX.encode())}
    described = to_key_values({**meta, **describe_values(meta)})
    rewritten = pa.table(columns).replace_schema_metadata({**others, **described})
    with atomic_file(output if output is not None else copy) as tmp:
        pq.write_table(rewritten, tmp)
    return Copied(len(ids), source_rows)
