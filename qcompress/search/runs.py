"""Runs {query id: {document id: score}} built from search results: the one place where a ranking becomes a run
(`qcompress.evaluation.rank`, the recipes' `rank_with`, `qcompress score`).

A run from a full ranking keeps each query's top-k in order (best first, as the search ranked it); a run from
per-query pools (the judged and rerank protocols) scores every document of each pool, and a query with an empty
pool gets an empty ranking (evaluation scores it 0).

Example:
    >>> import torch
    >>> run_from_topk(["q1"], ["a", "b", "c"], torch.tensor([[0.5, 0.25]]), torch.tensor([[2, 0]]))
    {'q1': {'c': 0.5, 'a': 0.25}}
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from torch import Tensor

__all__ = ["Run", "run_from_ranking", "run_from_topk", "run_from_pools"]

Run = dict[str, dict[str, float]]  # qid -> {docid: score}, as pytrec_eval takes it


def run_from_ranking(qids: Sequence[str], ranked_ids: Sequence[Sequence[str]], scores: Tensor) -> Run:
    """Query i's documents ranked_ids[i] with their scores scores[i] ((m, k), best first).

    Example:
        >>> import torch
        >>> run_from_ranking(["q1", "q2"], [["a"], ["b"]], torch.tensor([[1.0], [0.5]]))
        {'q1': {'a': 1.0}, 'q2': {'b': 0.5}}
    """
    return {qid: dict(zip(ranked_ids[row], scores[row].tolist())) for row, qid in enumerate(qids)}


def run_from_topk(qids: Sequence[str], doc_ids: Sequence[str], scores: Tensor, indices: Tensor) -> Run:
    """A full ranking: query i's top-k (scores, indices into `doc_ids`), each (m, k), as a search returns them."""
    return run_from_ranking(qids, [[doc_ids[j] for j in row] for row in indices.tolist()], scores)


def run_from_pools(
    qids: Sequence[str],
    doc_ids: Sequence[str],
    pools: Mapping[str, Sequence[str]],
    score: Callable[[int, list[int]], Tensor],
) -> Run:
    """Every document of each query's pool scored: `score(i, positions)` gives query i's scores (one a position)
    of the documents at those positions of `doc_ids`, in the pool's order; it is not called for an empty pool.

    Example:
        >>> import torch
        >>> run_from_pools(["q1", "q2"], ["a", "b"], {"q1": ["b", "a"], "q2": []},
        ...                lambda row, positions: torch.tensor(positions, dtype=torch.float32))
        {'q1': {'b': 1.0, 'a': 0.0}, 'q2': {}}
    """
    position = {d: i for i, d in enumerate(doc_ids)}
    run: Run = {}
    for row, qid in enumerate(qids):
        pool = pools[qid]
        run[qid] = dict(zip(pool, score(row, [position[d] for d in pool]).tolist())) if pool else {}
    return run
