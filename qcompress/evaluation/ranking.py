"""Rank a collection's documents for its judged queries with a model, under one protocol, and score the run.

`rank` encodes only what the protocol needs (`protocols.collection_texts`), through the pooled-output cache
where one is given; `evaluate` adds the metrics (`metrics.evaluate_run`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from torch import Tensor

from qcompress import search
from qcompress.cache import encode
from qcompress.errors import InputError
from qcompress.evaluation.metrics import METRICS, Run, evaluate_run, measure_run
from qcompress.evaluation.protocols import collection_texts
from qcompress.similarity import check_similarity, pairwise_scores

__all__ = ["Progress", "exact_topk", "rank", "Evaluation", "evaluate"]

Progress = Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n)


def exact_topk(queries: Tensor, docs: Tensor, k: int, similarity: str) -> tuple[Tensor, Tensor]:
    """Exact top-k (scores, indices), each (m, min(k, N)), by log-fidelity (angles) or cosine (vectors).

    `qcompress.search` does the work: exact results (ties to the lower index) at about the cost of a matmul.

    Example:
        >>> import torch
        >>> exact_topk(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [2.0, 0.0]]), 1, "cosine")[1]
        tensor([[1]])
    """
    if check_similarity(similarity) == "fidelity":
        return search.topk(queries, docs, k)
    return search.topk_cosine(queries, docs, k)


def _no_progress(description: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def rank(
    model,
    collection,
    protocol: str = "full",
    *,
    first_stage: Mapping[str, Mapping[str, float]] | None = None,
    top_k: int = 1000,
    batch_size: int = 64,
    cache=None,
    progress: Progress | None = None,
) -> Run:
    """Rank documents for every judged query of `collection` (a `qcompress.data.Collection`) with `model`.

    `full` keeps the best `top_k` of the whole corpus; `judged` and `rerank` score all of each query's
    candidates (see `protocols.candidates`); judged documents that the corpus has no text for cannot be ranked
    and are left out (NDCG's ideal ranking still counts them). `rerank` without `first_stage` uses the
    collection's own first stage where it ships one (TREC DL's BM25 run). `model` is a
    `qcompress.model.QCompressModel` (or anything with `similarity` and `encode`: queries are encoded with
    role="query", documents with role="document", so each gets the model's prompt); `cache` is a
    `qcompress.cache.PooledCache` or None; `progress(description, total)` returns a callback advanced by the
    number of texts encoded.

    Example (a stand-in model that counts two letters):
        >>> import torch
        >>> from qcompress.data import Collection
        >>> class Letters:
        ...     similarity = "cosine"
        ...     def encode(self, texts, *, role, batch_size, on_batch):
        ...         return torch.tensor([[t.count("w"), t.count("h")] for t in texts], dtype=torch.float32)
        >>> c = Collection(name="tiny", corpus={"d1": "wing", "d2": "heat"}, queries={"q1": "wing?"},
        ...                qrels={"q1": {"d1": 1}}, split="test")
        >>> rank(Letters(), c, "full", top_k=1)
        {'q1': {'d1': 1.0}}
    """
    if top_k <= 0:
        raise InputError(f"top_k must be positive, got {top_k}")
    progress = progress or _no_progress
    gathered = collection_texts(collection, protocol, first_stage=first_stage, top_k=top_k)
    qids, doc_ids, pools = gathered.qids, gathered.doc_ids, gathered.pools
    queries = encode(model, gathered.query_texts, batch_size=batch_size, cache=cache, role="query",
                     on_batch=progress("encoding queries", len(qids)))
    docs = encode(model, gathered.doc_texts, batch_size=batch_size, cache=cache, role="document",
                  on_batch=progress("encoding documents", len(doc_ids)))

    run: Run = {}
    if pools is None:
        scores, indices = exact_topk(queries, docs, top_k, model.similarity)
        for row, qid in enumerate(qids):
            run[qid] = {doc_ids[j]: s for j, s in zip(indices[row].tolist(), scores[row].tolist())}
        return run
    position = {d: i for i, d in enumerate(doc_ids)}
    for row, qid in enumerate(qids):
        pool = pools[qid]
        if not pool:
            run[qid] = {}  # nothing to rank: evaluate_run scores this query 0
            continue
        scores = pairwise_scores(queries[row : row + 1], docs[[position[d] for d in pool]], model.similarity)[0]
        run[qid] = dict(zip(pool, scores.tolist()))
    return run


@dataclass
class Evaluation:
    """One model's run and metrics under one protocol."""

    protocol: str
    run: Run
    metrics: dict[str, float]  # mean over all judged queries
    per_query: dict[str, dict[str, float]]
    empty_queries: list[str] = field(default_factory=list)  # judged queries with nothing ranked (scored 0)
    judged_without_text: int = 0  # judged protocol: (query, document) judgements that could not be ranked


def evaluate(
    model,
    collection,
    protocol: str = "full",
    *,
    first_stage: Mapping[str, Mapping[str, float]] | None = None,
    top_k: int = 1000,
    batch_size: int = 64,
    cache=None,
    progress: Progress | None = None,
    metrics: Sequence[str] = tuple(METRICS),
) -> Evaluation:
    """`rank`, then the metrics against the collection's qrels at its relevance level: `metrics` are ir_measures
    names (`measure_run`: nDCG@10, AP...) or all older keys of `METRICS` (`evaluate_run`: ndcg_cut_10...)."""
    run = rank(model, collection, protocol, first_stage=first_stage, top_k=top_k, batch_size=batch_size,
               cache=cache, progress=progress)
    if all(m in METRICS for m in metrics):  # the older keys, which training logs and recipes use
        mean, per_query = evaluate_run(run, collection.qrels, collection.relevance_level, metrics)
    else:
        mean, per_query = measure_run(run, collection.qrels, metrics, collection.relevance_level)
    empty = [q for q in collection.qrels if not run.get(q)]
    unranked = 0
    if protocol == "judged":
        unranked = sum(len(docs) - len(run.get(q, ())) for q, docs in collection.qrels.items())
    return Evaluation(protocol=protocol, run=run, metrics=mean, per_query=per_query, empty_queries=empty,
                      judged_without_text=unranked)
