"""Moved to `qcompress.search.cosine` (exact top-k by cosine); re-exported here for old imports."""

from qcompress.search.cosine import brute_force_topk_cosine, topk_cosine

__all__ = ["topk_cosine", "brute_force_topk_cosine"]
