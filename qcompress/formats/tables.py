"""Records of tabular text files, CSV and Parquet, as field -> value dicts with where each came from: what
`qcompress.formats.texts` checks and turns into (id, text) as it does JSONL records.

CSV has a header row naming the fields (RFC 4180 quoting: a text may hold commas, quotes and line breaks); every
value is a string, and a record is placed by its line. Parquet is read a batch of rows at a time (memory flat in
the file's size), only the columns asked for, and a record is placed by its 1-based row; ids may be strings or
integers, texts and titles strings. A column that is not there is left out of the records (the texts reader says
which field is missing); a file that cannot be read is one `InputError`.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "docs.csv"
    >>> _ = p.write_text('docid,contents\\nd1,"lift, and drag"\\n')
    >>> list(csv_records(p))
    [(2, {'docid': 'd1', 'contents': 'lift, and drag'})]
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from qcompress.errors import InputError
from qcompress.formats.lines import PathLike, open_lines

__all__ = ["csv_records", "parquet_records", "BATCH_ROWS"]

BATCH_ROWS = 1024  # Parquet rows read at a time


def csv_records(path: PathLike) -> Iterator[tuple[int, dict]]:
    """(line, {field: value}) of each data row of a CSV file with a header row; blank lines are skipped."""
    lines = open_lines(path)  # UTF-8 checked line by line, a byte-order mark dropped
    numbered = (line + "\n" for _, line in lines)
    reader = csv.reader(numbered)
    try:
        header = next(reader, None)
        if header is None:
            return
        if not any(name.strip() for name in header):
            raise InputError("the first line is the header, naming the fields (id,text,...), and it is empty",
                             file=path, line=1)
        for row in reader:
            if not any(value.strip() for value in row):
                continue
            if len(row) > len(header):
                raise InputError(f"{len(row)} values, but the header names {len(header)} fields (a comma inside a "
                                 'text needs the text in double quotes: "a, b")', file=path, line=reader.line_num)
            yield reader.line_num, dict(zip((name.strip() for name in header), row))
    except csv.Error as err:
        raise InputError(f"malformed CSV ({err})", file=path, line=reader.line_num) from None


def parquet_records(path: PathLike, fields: Sequence[str]) -> Iterator[tuple[int, dict]]:
    """(row, {field: value}) of a Parquet file's rows, with the columns of `fields` that it has."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found; check the path" if not path.exists() else "is a folder; expected a file",
                         file=path)
    try:
        reader = pq.ParquetFile(path)
        columns = [name for name in dict.fromkeys(fields) if name in reader.schema_arrow.names]
        row = 0
        for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            values = {name: batch.column(name).to_pylist() for name in columns}
            for i in range(batch.num_rows):
                row += 1
                yield row, {name: values[name][i] for name in columns}
    except (pa.ArrowException, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"not a readable Parquet file ({reason})", file=path) from None
