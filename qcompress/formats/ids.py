"""What an id may be, and duplicate ids in streams of millions of rows, with memory that grows with the ids.

An id is a non-empty string without whitespace (TREC runs are whitespace-separated) or control characters, of
any length and script (`²`, a 5,000-digit number): `id_problem` says what is wrong with one, and every reader
of ids (texts, embedding Parquet files) and the TREC run writer apply it, so that what `compress` accepts
`score` accepts too. `BAD_ID_CHARACTERS` is the same rule as a regular expression for pyarrow (RE2).

Every reader that refuses duplicate ids (texts, embedding Parquet, `compress`, `score`) checks them a batch at a
time with `UniqueIds`: each id's 8-byte hash goes into sorted runs (`qcompress.sorted_runs`), and a hash match is
re-checked exactly against the stored id bytes, so a hash collision never reports a false duplicate. About
32 bytes plus the id's UTF-8 length per id (a Python dict of the ids takes ~150).

Example:
    >>> seen = UniqueIds()
    >>> seen.add(["a", "b"], [1, 2]) is None
    True
    >>> seen.add(["c", "a"], [3, 4])     # "a" (index 1 of this batch) was first seen at position 1
    (1, 1)
"""

from __future__ import annotations

import re
from array import array
from typing import Sequence

import numpy as np

from qcompress.sorted_runs import SortedRuns

__all__ = ["UniqueIds", "id_problem", "BAD_ID_CHARACTERS"]

# Python's whitespace (str.isspace) and the control characters (Unicode category Cc), as code point ranges.
_BAD_RANGES = [(0x00, 0x20), (0x7F, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F),
               (0x205F, 0x205F), (0x3000, 0x3000)]
_BAD = re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in _BAD_RANGES) + "]")
BAD_ID_CHARACTERS = "[" + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in _BAD_RANGES) + "]"  # RE2's syntax


def id_problem(value: str) -> str | None:
    """What makes `value` no id (a few words), or None for a valid id.

    Example:
        >>> id_problem("²"), id_problem("7" * 5000)
        (None, None)
        >>> id_problem(""), id_problem("a b"), id_problem("a\\x07")
        ('is empty', 'contains whitespace (character 2)', 'contains a control character (character 2)')
    """
    if not value:
        return "is empty"
    bad = _BAD.search(value)
    if bad is None:
        return None
    kind = "whitespace" if bad.group().isspace() else "a control character"
    return f"contains {kind} (character {bad.start() + 1})"


class UniqueIds:
    """The ids seen so far, each with the caller's position for it (a line or row number, for messages)."""

    def __init__(self) -> None:
        self._runs = SortedRuns()
        self._positions = array("q")
        self._offsets = array("q", [0])  # id i is _bytes[_offsets[i]:_offsets[i + 1]]
        self._bytes = bytearray()

    def __len__(self) -> int:
        return len(self._positions)

    @property
    def nbytes(self) -> int:
        """Bytes held (hash runs, positions, offsets, id bytes)."""
        return self._runs.nbytes + 8 * (len(self._positions) + len(self._offsets)) + len(self._bytes)

    def _stored(self, entry: int) -> bytes:
        return bytes(self._bytes[self._offsets[entry] : self._offsets[entry + 1]])

    def add(self, ids: Sequence[str], positions: Sequence[int]) -> tuple[int, int] | None:
        """Remember a batch of ids at `positions`; or, if one of them was seen before (earlier in this batch or
        in an earlier one), remember none and return (its index in the batch, the earlier position).

        The index is the first duplicate's in batch order, so a stream reports the earliest repeated row.
        """
        if len(ids) != len(positions):
            raise ValueError(f"got {len(ids)} ids for {len(positions)} positions")
        duplicate = None if len(set(ids)) == len(ids) else _first_repeat(ids, positions)
        hashes = np.fromiter(map(hash, ids), np.int64, len(ids))
        query, entries = self._runs.matches(hashes)
        for index, entry in sorted(zip(query.tolist(), entries.tolist())):
            if duplicate is not None and index >= duplicate[0]:
                break
            if self._stored(entry) == ids[index].encode("utf-8"):  # exact: a hash collision is not a duplicate
                duplicate = (index, self._positions[entry])
                break
        if duplicate is not None:
            return duplicate
        start = len(self._positions)
        joined = "".join(ids)
        data = joined.encode("utf-8")
        # All ASCII (the usual case): byte lengths are string lengths, no per-id encoding needed.
        lengths = map(len, ids) if len(data) == len(joined) else (len(i.encode("utf-8")) for i in ids)
        ends = self._offsets[-1] + np.cumsum(np.fromiter(lengths, np.int64, len(ids)))
        self._bytes += data
        self._offsets.frombytes(ends.astype(np.int64).tobytes())
        self._positions.frombytes(np.asarray(positions, dtype=np.int64).tobytes())
        self._runs.add(hashes, np.arange(start, start + len(ids), dtype=np.int64))
        return None


def _first_repeat(ids: Sequence[str], positions: Sequence[int]) -> tuple[int, int]:
    """(index, position of its first copy) of the first id that repeats an earlier one of the same batch."""
    first: dict[str, int] = {}
    for index, doc_id in enumerate(ids):
        if doc_id in first:
            return index, int(positions[first[doc_id]])
        first[doc_id] = index
    raise ValueError("no repeated id")  # callers check first
