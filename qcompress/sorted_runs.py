"""A compact multimap from 64-bit hashes to 64-bit values: sorted numpy runs, merged as they grow.

Duplicate-id checks over millions of rows (`qcompress.formats.ids.UniqueIds`) and the pooled-output cache's
text index (`qcompress.cache.PooledCache`) both need "which earlier entries share this hash?" for batches of
keys, with memory of 16 bytes per entry instead of a Python dict's ~100. Each added batch becomes a sorted run;
whenever the last run is at least half as long as the one before it, the two are merged (as in a log-structured
merge tree), so there are at most log2(entries) runs and each entry is re-sorted O(log entries) times.

Example:
    >>> runs = SortedRuns()
    >>> runs.add(np.array([5, 3, 5], dtype=np.int64), np.array([0, 1, 2], dtype=np.int64))
    >>> query, value = runs.matches(np.array([5, 4], dtype=np.int64))
    >>> query.tolist(), value.tolist()
    ([0, 0], [0, 2])
"""

from __future__ import annotations

import numpy as np

__all__ = ["SortedRuns"]


class SortedRuns:
    """Append-only (hash, value) pairs, int64 both, looked up a batch of hashes at a time."""

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted hashes, values in the same order)

    def __len__(self) -> int:
        return sum(len(h) for h, _ in self._runs)

    @property
    def nbytes(self) -> int:
        """Bytes held by the runs (for memory accounting in tests and benchmarks)."""
        return sum(h.nbytes + v.nbytes for h, v in self._runs)

    def add(self, hashes: np.ndarray, values: np.ndarray) -> None:
        """Add pairs (equal-length int64 arrays); equal hashes may repeat, within a batch or across batches."""
        if len(hashes) != len(values):
            raise ValueError(f"got {len(hashes)} hashes for {len(values)} values")
        if not len(hashes):
            return
        order = np.argsort(hashes, kind="stable")
        self._runs.append((np.ascontiguousarray(hashes[order], np.int64), np.ascontiguousarray(values[order], np.int64)))
        while len(self._runs) > 1 and 2 * len(self._runs[-1][0]) >= len(self._runs[-2][0]):
            (h1, v1), (h2, v2) = self._runs[-2], self._runs[-1]
            hashes, values = np.concatenate([h1, h2]), np.concatenate([v1, v2])
            order = np.argsort(hashes, kind="stable")  # stable: values of equal hashes stay in insertion order
            self._runs[-2:] = [(hashes[order], values[order])]

    def matches(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every stored pair whose hash equals one of `hashes`: (index into `hashes`, stored value) arrays."""
        hashes = np.asarray(hashes, np.int64)
        order = np.argsort(hashes)
        wanted = hashes[order]  # sorted needles: numpy's binary search narrows from the previous answer
        queries, values = [], []
        for run_hashes, run_values in self._runs:
            left = np.searchsorted(run_hashes, wanted, side="left")
            inside = left < len(run_hashes)
            hit = np.flatnonzero(inside & (run_hashes[np.minimum(left, len(run_hashes) - 1)] == wanted))
            if not hit.size:
                continue
            # Usually one match per hit; repeated hashes (collisions, repeated keys) expand to all of theirs.
            reps = np.searchsorted(run_hashes, wanted[hit], side="right") - left[hit]
            query = np.repeat(hit, reps)
            offsets = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
            queries.append(order[query])
            values.append(run_values[left[query] + offsets])
        if not queries:
            empty = np.empty(0, np.int64)
            return empty, empty
        return np.concatenate(queries), np.concatenate(values)
