"""Moved: the tie rule and the running top-k live in `qcompress.search.selection`, the argument checks in
`qcompress.search.checks`, `search_workers` in `qcompress.search.workers`. Re-exported here for old imports."""

from qcompress.search.checks import check_2d, check_dims, check_finite, check_k
from qcompress.search.pairs import UNIT_ROUNDOFF
from qcompress.search.selection import append_ragged, empty_result, rank, select_topk
from qcompress.search.workers import DEFAULT_CHUNK_ELEMENTS, search_workers

__all__ = ["select_topk", "search_workers", "rank", "empty_result", "append_ragged", "check_k", "check_2d",
           "check_finite", "check_dims", "UNIT_ROUNDOFF", "DEFAULT_CHUNK_ELEMENTS"]
