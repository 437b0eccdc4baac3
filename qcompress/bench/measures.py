"""What the bench measures per query, and the 95% interval of a mean over queries (and seeds).

    recall@k   |a method's top k  ∩  the float32 encoder's exact top k| / k, over the evaluated documents (a
               pseudo-query's own document left out of both): how much of the uncompressed ranking a compression
               keeps, without any judgement. k is capped by the documents there are to rank.
    NDCG@10    against the judgements (pytrec_eval through `qcompress.evaluation.evaluate_run`), the ranking being
               the method's top 100 of all evaluated documents (full ranking), in the method's order.

Intervals: the mean of a (seeds x queries) matrix of per-query values and its 95% confidence interval from
`qcompress.evaluation.seed_stats.seed_aware_test` against zero: over queries alone for a deterministic method (one
row: the t interval of a mean), over queries and seeds for a randomised one (the seed-to-seed spread widens it).

Example:
    >>> truth = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    >>> recall_at(torch.tensor([[1, 0, 9, 8], [4, 8, 9, 5]]), truth, 2).tolist()
    [1.0, 0.5]
    >>> mean, low, high = interval([[1.0, 0.5, 0.75, 0.75]])
    >>> mean, round(low, 3), round(high, 3)
    (0.75, 0.425, 1.075)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from qcompress.evaluation import evaluate_run
from qcompress.evaluation.seed_stats import seed_aware_test

__all__ = ["RECALL_DEPTHS", "recall_at", "ndcg_at_10", "interval"]

RECALL_DEPTHS = (10, 100)


def recall_at(found: Tensor, truth: Tensor, k: int) -> np.ndarray:
    """Per query: the share of the truth's first k (fewer when fewer documents are ranked) among the first k
    found."""
    k = min(k, truth.shape[1])
    if k == 0:
        return np.zeros(truth.shape[0])
    a, b = found[:, :k], truth[:, :k]
    hits = (a.unsqueeze(2) == b.unsqueeze(1)).any(dim=2).sum(dim=1)
    return (hits.to(torch.float64) / k).numpy()


def ndcg_at_10(found: Tensor, rows: Sequence[int], query_ids: Sequence[str], doc_ids: Sequence[str],
               qrels: dict[str, dict[str, int]]) -> np.ndarray:
    """NDCG@10 of the judged queries `rows` (their ranked document indices in `found`), in the order of `rows`."""
    run = {}
    for row in rows:
        ranked = found[row].tolist()
        # Scores that keep the method's order (trec_eval would otherwise re-sort ties by document id).
        run[query_ids[row]] = {doc_ids[j]: float(len(ranked) - rank) for rank, j in enumerate(ranked)}
    judged = {query_ids[row]: qrels[query_ids[row]] for row in rows}
    _, per_query = evaluate_run(run, judged, 1, ("ndcg_cut_10",))
    return np.array([per_query[query_ids[row]]["ndcg_cut_10"] for row in rows])


def interval(values: Sequence[Sequence[float]] | np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): the mean of a (seeds x queries) matrix and its 95% confidence interval (module
    docstring)."""
    a = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if a.size == 0:
        return float("nan"), float("nan"), float("nan")
    test = seed_aware_test(a, np.zeros((1, a.shape[1])))
    low, high = test.interval()
    return float(a.mean()), float(low), float(high)

