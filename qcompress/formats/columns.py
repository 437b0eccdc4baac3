"""The Arrow types an embedding file's columns may arrive in, and their conversion to the types qcompress writes.

qcompress writes its values as fixed-size types (`fixed_size_list<float>[dim]`, `fixed_size_binary[bytes]` for
low-bit codes) and ids as `string`. A file that went through a DataFrame keeps the values but not the types:
pandas and DuckDB write lists back as `list<float>` (pandas and polars write ids as `large_string`, polars may
write `large_binary` codes). Those are the same values when every row has the right length, so the reader accepts
them (`accepts`) and converts each batch (`to_fixed`), naming the first row of another length.

Example:
    >>> import pyarrow as pa
    >>> fixed = pa.list_(pa.float32(), 2)
    >>> rows = pa.array([[0.5, 1.0], [2.0, 3.0]], pa.large_list(pa.float32()))
    >>> accepts(rows.type, fixed), to_fixed(rows, fixed, pa.array(["a", "b"])).type
    (True, FixedSizeListType(fixed_size_list<item: float>[2]))
    >>> to_fixed(pa.array([[0.5]], pa.list_(pa.float32())), fixed, pa.array(["a"]), file="x.parquet", column="angles")
    Traceback (most recent call last):
    ...
    qcompress.errors.InputError: x.parquet: field "angles": row 1 (id "a") has 1 values; every row needs 2
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qcompress.errors import InputError
from qcompress.formats.lines import PathLike

__all__ = ["is_text", "accepts", "to_fixed", "type_name"]


def is_text(arrow_type: pa.DataType) -> bool:
    """A string column of any width (`string`, `large_string`, `string_view`)."""
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(
        arrow_type)


def _is_list(arrow_type: pa.DataType) -> bool:
    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(
        arrow_type)


def accepts(found: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column of type `found` can hold the values of the fixed-size `expected`: the same type, a
    (large) list of the same numbers for a fixed-size list, (large) binary for fixed-size binary. Row lengths are
    checked as the rows are read (`to_fixed`)."""
    if found == expected:
        return True
    if pa.types.is_fixed_size_list(expected):
        if pa.types.is_fixed_size_list(found):
            return False  # another length: never the same values
        return _is_list(found) and found.value_type == expected.value_type
    if pa.types.is_fixed_size_binary(expected):
        return pa.types.is_binary(found) or pa.types.is_large_binary(found)
    return False


def to_fixed(values: pa.Array, expected: pa.DataType, ids: pa.Array, *, file: PathLike | None = None,
             column: str | None = None, first_row: int = 0) -> pa.Array:
    """`values` as the fixed-size type `expected` (unchanged when already of it); `InputError` naming the first
    row (1-based, after `first_row` rows) whose length differs. Null rows are left for the caller to name."""
    if values.type == expected:
        return values
    if pa.types.is_fixed_size_list(expected):
        lengths, size, unit = pc.list_value_length(values), expected.list_size, "values"
    else:
        lengths, size, unit = pc.binary_length(values), expected.byte_width, "bytes"
    wrong = pc.fill_null(pc.not_equal(lengths, size), False).to_numpy(zero_copy_only=False)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise InputError(f'row {first_row + row + 1} (id "{ids[row].as_py()}") has {lengths[row].as_py()} {unit}; '
                         f"every row needs {size}", file=file, field=column)
    return values.cast(expected)


def type_name(arrow_type: pa.DataType) -> str:
    """An Arrow type as error messages name it (`fixed_size_list<float>[128]`)."""
    if pa.types.is_fixed_size_list(arrow_type):
        return f"fixed_size_list<{arrow_type.value_type}>[{arrow_type.list_size}]"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):  # without the item's name
        return f"{'large_' if pa.types.is_large_list(arrow_type) else ''}list<{arrow_type.value_type}>"
    return str(arrow_type)
