"""Moved to `qcompress.search.approximate` (the approximate index: IVF candidates re-ranked by exact log-fidelity);
re-exported here for old imports."""

from qcompress.search.approximate import (
    DEFAULT_RERANK,
    FORMAT,
    ApproximateIndex,
    IndexInfo,
    build_index,
    default_nlist,
    recall_at_k,
)

__all__ = ["build_index", "ApproximateIndex", "recall_at_k", "IndexInfo", "FORMAT", "DEFAULT_RERANK", "default_nlist"]
