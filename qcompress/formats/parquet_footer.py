"""One Parquet footer for row groups written as separate files and laid end to end: what lets `EmbeddingWriter`
write its output once and still resume exactly.

A Parquet file is `PAR1`, the row groups' bytes, then a footer (a Thrift-encoded FileMetaData, its length and
`PAR1`) that gives each column chunk's absolute byte offset. The writer writes each chunk of rows as a small
Parquet file in memory, appends its row-group bytes to the growing output and keeps its footer; at the end,
`stitch_footer` joins those footers into one, moving each chunk's offsets by where its bytes landed. Row groups
are never read back or rewritten, and an interrupted output keeps every finished chunk (with its footer in the
resume journal).

The footer is read and written with a small decoder/encoder of Thrift's compact protocol (the Parquet format's
only serialisation); fields are kept as they are, in order, except the offsets moved, the row count and the row
groups' ordinals. Page indexes and bloom filters hold offsets of their own, so chunks must be written without
them (`pyarrow.parquet.ParquetWriter`'s default).

Example:
    >>> import pyarrow as pa, pyarrow.parquet as pq
    >>> def chunk(ids):
    ...     sink = pa.BufferOutputStream()
    ...     pq.write_table(pa.table({"id": ids}), sink)
    ...     return sink.getvalue().to_pybytes()
    >>> a, b = chunk(["x", "y"]), chunk(["z"])
    >>> body_a, body_b = a[4 : -8 - footer_length(a)], b[4 : -8 - footer_length(b)]
    >>> footer = stitch_footer([footer_bytes(a), footer_bytes(b)], [0, len(body_a)])
    >>> data = b"PAR1" + body_a + body_b + footer + len(footer).to_bytes(4, "little") + b"PAR1"
    >>> pq.read_table(pa.BufferReader(data)).column("id").to_pylist()
    ['x', 'y', 'z']
"""

from __future__ import annotations

__all__ = ["MAGIC", "footer_length", "footer_bytes", "stitch_footer", "decode_struct", "encode_struct"]

MAGIC = b"PAR1"

# Compact-protocol type ids.
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)

# Field ids of parquet.thrift (FileMetaData, RowGroup, ColumnChunk, ColumnMetaData) that this module touches.
_FILE_NUM_ROWS, _FILE_ROW_GROUPS = 3, 4
_GROUP_COLUMNS, _GROUP_FILE_OFFSET, _GROUP_ORDINAL = 1, 5, 7
_MAX_ORDINAL = 2**15 - 1
_CHUNK_FILE_OFFSET, _CHUNK_META = 2, 3
_CHUNK_INDEX_FIELDS = (4, 6)  # offset_index_offset, column_index_offset
_META_OFFSETS = (9, 10, 11)  # data_page_offset, index_page_offset, dictionary_page_offset
_META_BLOOM_FILTER = 14

Field = tuple[int, int, object]  # (field id, compact type, value)


def footer_length(data: bytes) -> int:
    """Length of the Thrift footer of a complete Parquet file held in `data`."""
    if len(data) < 12 or data[:4] != MAGIC or data[-4:] != MAGIC:
        raise ValueError("not a complete Parquet file (no PAR1 at both ends)")
    return int.from_bytes(data[-8:-4], "little")


def footer_bytes(data: bytes) -> bytes:
    """The Thrift FileMetaData of a complete Parquet file held in `data`."""
    length = footer_length(data)
    return data[-8 - length : -8]


# -- the compact protocol --------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated Thrift data")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def _read_value(r: _Reader, kind: int):
    if kind in (_TRUE, _FALSE):  # a bool field: the value is its type
        return None
    if kind == _BYTE:
        return r.byte()
    if kind in (_I16, _I32, _I64):
        return r.zigzag()
    if kind == _DOUBLE:
        return r.take(8)
    if kind == _BINARY:
        return r.take(r.varint())
    if kind in (_LIST, _SET):
        header = r.byte()
        size, elem = header >> 4, header & 0x0F
        if size == 15:
            size = r.varint()
        # Bools inside a list are one byte each, not a field type.
        items = [r.byte() if elem in (_TRUE, _FALSE) else _read_value(r, elem) for _ in range(size)]
        return elem, items
    if kind == _MAP:
        size = r.varint()
        types = r.byte() if size else 0
        key, value = types >> 4, types & 0x0F
        return types, [(_read_value(r, key), _read_value(r, value)) for _ in range(size)]
    if kind == _STRUCT:
        return _read_struct(r)
    raise ValueError(f"unknown Thrift compact type {kind}")


def _read_struct(r: _Reader) -> list[Field]:
    fields: list[Field] = []
    last = 0
    while True:
        header = r.byte()
        kind = header & 0x0F
        if kind == _STOP:
            return fields
        delta = header >> 4
        fid = last + delta if delta else r.zigzag()
        fields.append((fid, kind, _read_value(r, kind)))
        last = fid


def decode_struct(data: bytes) -> list[Field]:
    """A Thrift compact-protocol struct as a list of (field id, type, value), in the order written."""
    r = _Reader(data)
    fields = _read_struct(r)
    if r.pos != len(data):
        raise ValueError(f"{len(data) - r.pos} bytes after the end of the Thrift struct")
    return fields


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        if n < 0x80:
            out.append(n)
            return bytes(out)
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def _write_value(kind: int, value) -> bytes:
    if kind in (_TRUE, _FALSE):
        return b""
    if kind == _BYTE:
        return bytes([value])
    if kind in (_I16, _I32, _I64):
        return _zigzag(value)
    if kind == _DOUBLE:
        return value
    if kind == _BINARY:
        return _varint(len(value)) + value
    if kind in (_LIST, _SET):
        elem, items = value
        head = bytes([(len(items) << 4) | elem]) if len(items) < 15 else bytes([0xF0 | elem]) + _varint(len(items))
        body = b"".join(bytes([x]) if elem in (_TRUE, _FALSE) else _write_value(elem, x) for x in items)
        return head + body
    if kind == _MAP:
        types, pairs = value
        out = _varint(len(pairs)) + (bytes([types]) if pairs else b"")
        return out + b"".join(_write_value(types >> 4, k) + _write_value(types & 0x0F, v) for k, v in pairs)
    if kind == _STRUCT:
        return encode_struct(value)
    raise ValueError(f"unknown Thrift compact type {kind}")


def encode_struct(fields: list[Field]) -> bytes:
    """The inverse of `decode_struct`."""
    out = bytearray()
    last = 0
    for fid, kind, value in fields:
        delta = fid - last
        out += bytes([(delta << 4) | kind]) if 0 < delta <= 15 else bytes([kind]) + _zigzag(fid)
        out += _write_value(kind, value)
        last = fid
    out.append(_STOP)
    return bytes(out)


# -- stitching -------------------------------------------------------------------------------------------------


def _replace(fields: list[Field], fid: int, value) -> list[Field]:
    return [(f, k, value if f == fid else v) for f, k, v in fields]


def _shift_column(chunk: list[Field], shift: int) -> list[Field]:
    out = []
    for fid, kind, value in chunk:
        if fid in _CHUNK_INDEX_FIELDS:
            raise ValueError("column chunks with page indexes cannot be moved; write them without (the default)")
        if fid == _CHUNK_FILE_OFFSET and value:
            value += shift
        elif fid == _CHUNK_META:
            value = _shift_metadata(value, shift)
        out.append((fid, kind, value))
    return out


def _shift_metadata(meta: list[Field], shift: int) -> list[Field]:
    out = []
    for fid, kind, value in meta:
        if fid == _META_BLOOM_FILTER:
            raise ValueError("column chunks with bloom filters cannot be moved; write them without (the default)")
        out.append((fid, kind, value + shift if fid in _META_OFFSETS else value))
    return out


def _shift_group(group: list[Field], shift: int, ordinal: int) -> list[Field]:
    out = []
    for fid, kind, value in group:
        if fid == _GROUP_COLUMNS:
            elem, columns = value
            value = (elem, [_shift_column(c, shift) for c in columns])
        elif fid == _GROUP_FILE_OFFSET:
            value += shift
        elif fid == _GROUP_ORDINAL:
            if ordinal > _MAX_ORDINAL:
                continue  # an optional i16: left out past 32767 row groups rather than wrapped
            value = ordinal
        out.append((fid, kind, value))
    return out


def stitch_footer(footers: list[bytes], shifts: list[int]) -> bytes:
    """One FileMetaData (Thrift bytes) for the row groups of several Parquet files laid end to end.

    `footers[i]` is file i's FileMetaData; its row groups' byte offsets move by `shifts[i]` (where file i's byte 4,
    its first row group, lands in the joined file, minus 4). Schema and key-value metadata come from the first
    footer: the files must share them.
    """
    if not footers or len(footers) != len(shifts):
        raise ValueError("need one shift per footer, and at least one footer")
    first = decode_struct(footers[0])
    groups: list[list[Field]] = []
    rows = 0
    elem = _STRUCT
    for footer, shift in zip(footers, shifts):
        fields = {fid: value for fid, _, value in decode_struct(footer)}
        rows += fields[_FILE_NUM_ROWS]
        elem, items = fields.get(_FILE_ROW_GROUPS, (_STRUCT, []))
        groups.extend(_shift_group(group, shift, len(groups) + i) for i, group in enumerate(items))
    merged = _replace(_replace(first, _FILE_NUM_ROWS, rows), _FILE_ROW_GROUPS, (elem, groups))
    return encode_struct(merged)
