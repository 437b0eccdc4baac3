"""Search: exact top-k by log-fidelity (angles) and cosine (vectors), in memory or streamed from Parquet, an
approximate index beyond exact search's reach, and the runs built from their results.

    selection.py    the tie rule of every top-k (score desc, index asc): select_topk, rank, and TopK, the one
                    running top-k that merges results batch by batch
    pairs.py        the one exact scorer of (query, document) pairs: log-fidelity (the reference formula) and
                    cosine, bit-identical wherever a pair sits in a batch
    features.py     [cos; sin] features of angles and of 8-bit codes (by look-up): what the bounds' matmul and
                    the IVF work on
    fidelity.py     FidelityIndex, topk: exact top-k by log-fidelity at about a matmul's cost; brute_force_topk
    cosine.py       topk_cosine, brute_force_topk_cosine
    codes.py        CodeIndex, topk: exact top-k on low-bit angle codes (`qcompress.codes.topk`), faiss's PQ scan
                    certified against its rounding
    stream.py       search_parquet: exact top-k over a Parquet file or folder larger than memory (angles, 8-bit
                    or low-bit codes, vectors)
    approximate.py  build_index, ApproximateIndex: IVF candidates re-ranked exactly (`qcompress index build`)
    text.py         search_texts: query texts against a compressed corpus (`qcompress search`)
    runs.py         runs {qid: {doc id: score}} from a full ranking or from per-query pools
    checks.py       the argument checks and their messages
    workers.py      search_workers: independent pieces on threads, torch single-threaded (no OpenMP spin-waits)

Each search's functions take (queries, corpus, k) and return (scores, indices), each (m, min(k, N)), float32 and
int64, best first. This module re-exports the exact searches; `approximate` and `text` are imported on their own
(`from qcompress.search.approximate import ApproximateIndex`).

Example:
    >>> import torch
    >>> topk(torch.tensor([[0.0, 0.1]]), torch.tensor([[0.0, 0.0], [3.0, 3.0], [0.1, 0.0]]), 2)[1]
    tensor([[0, 2]])
"""

from qcompress.quantization import decode_codes
from qcompress.search.codes import CodeIndex
from qcompress.search.cosine import brute_force_topk_cosine, topk_cosine
from qcompress.search.fidelity import DEFAULT_CANDIDATES, FidelityIndex, brute_force_topk, topk
from qcompress.search.pairs import cosine_pairs, log_fidelity_pairs
from qcompress.search.runs import run_from_pools, run_from_ranking, run_from_topk
from qcompress.search.selection import TopK, rank, select_topk
from qcompress.search.stream import MIN_BATCH_ROWS, SCORES_PER_BATCH, search_parquet
from qcompress.search.workers import DEFAULT_CHUNK_ELEMENTS, search_workers

__all__ = [
    "FidelityIndex",
    "CodeIndex",
    "topk",
    "topk_cosine",
    "brute_force_topk",
    "brute_force_topk_cosine",
    "select_topk",
    "rank",
    "TopK",
    "decode_codes",
    "search_parquet",
    "search_workers",
    "log_fidelity_pairs",
    "cosine_pairs",
    "run_from_ranking",
    "run_from_topk",
    "run_from_pools",
    "DEFAULT_CANDIDATES",
    "DEFAULT_CHUNK_ELEMENTS",
    "SCORES_PER_BATCH",
    "MIN_BATCH_ROWS",
]
