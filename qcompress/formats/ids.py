"""Duplicate ids in streams of millions of rows, with memory that grows with the ids, not with the texts.

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

from array import array
from typing import Sequence

import numpy as np

from qcompress.sorted_runs import SortedRuns

__all__ = ["UniqueIds"]


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
