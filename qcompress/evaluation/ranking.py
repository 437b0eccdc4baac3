"""Rank a collection's documents for its judged queries with a model, under one protocol, and score the run.

`rank` encodes only what the protocol needs (`protocols.collection_texts`), through the pooled-output cache
where one is given; `evaluate` adds the metrics (`metrics.evaluate_run`). Documents stored as low-bit codes
(`bits`, by default for a model trained with `--bits`) are ranked by what `compress --bits` stores: their angles
coded with the levels `compress` would choose (`qcompress.codes.corpus_codec`: the model's, else fitted on the
first 4,096 documents encoded) and decoded, against float32 query angles (the asymmetric score, as `score`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from torch import Tensor

from qcompress.cache import encode
from qcompress.codes import AngleCodes, corpus_codec, model_codec, stored_bits
from qcompress.errors import InputError
from qcompress.evaluation.metrics import METRICS, Run, evaluate_run, measure_run
from qcompress.evaluation.protocols import collection_texts
from qcompress.search import run_from_pools, run_from_topk
from qcompress.similarity import get_similarity, pairwise_scores

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
    return get_similarity(similarity).topk(queries, docs, k)


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
    bits: int | None = None,
) -> Run:
    """Rank documents for every judged query of `collection` (a `qcompress.data.Collection`) with `model`.

    `full` keeps the best `top_k` of the whole corpus; `judged` and `rerank` score all of each query's
    candidates (see `protocols.candidates`); judged documents that the corpus has no text for cannot be ranked
    and are left out (NDCG's ideal ranking still counts them). `rerank` without `first_stage` uses the
    collection's own first stage where it ships one (TREC DL's BM25 run). `model` is a
    `qcompress.model.QCompressModel` (or anything with `similarity` and `encode`: queries are encoded with
    role="query", documents with role="document", so each gets the model's prompt, as torch tensors:
    `convert_to_tensor=True`); `cache` is a
    `qcompress.cache.PooledCache` or None; `progress(description, total)` returns a callback advanced by the
    number of texts encoded. `bits`: documents as low-bit codes of that many bits (module docstring), 0 as float32,
    None as the model stores them by default (`qcompress.codes.stored_bits`).

    Example (a stand-in model that counts two letters):
        >>> import torch
        >>> from qcompress.data import Collection
        >>> class Letters:
        ...     similarity = "cosine"
        ...     def encode(self, texts, *, role, batch_size, on_batch, convert_to_tensor):
        ...         return torch.tensor([[t.count("w"), t.count("h")] for t in texts], dtype=torch.float32)
        >>> c = Collection(name="tiny", corpus={"d1": "wing", "d2": "heat"}, queries={"q1": "wing?"},
        ...                qrels={"q1": {"d1": 1}}, split="test")
        >>> rank(Letters(), c, "full", top_k=1)
        {'q1': {'d1': 1.0}}
    """
    return _ranked(model, collection, protocol, first_stage=first_stage, top_k=top_k, batch_size=batch_size,
                   cache=cache, progress=progress, bits=bits)[0]


def _ranked(model, collection, protocol: str, *, first_stage, top_k: int, batch_size: int, cache,
            progress: Progress | None, bits: int | None) -> tuple[Run, AngleCodes | None, str | None]:
    """`rank`'s run, and the codec the documents were coded with and where its levels came from (or None)."""
    if top_k <= 0:
        raise InputError(f"top_k must be positive, got {top_k}")
    bits = stored_bits(model, bits)
    progress = progress or _no_progress
    gathered = collection_texts(collection, protocol, first_stage=first_stage, top_k=top_k)
    qids, doc_ids, pools = gathered.qids, gathered.doc_ids, gathered.pools
    queries = encode(model, gathered.query_texts, batch_size=batch_size, cache=cache, role="query",
                     on_batch=progress("encoding queries", len(qids)))
    docs = encode(model, gathered.doc_texts, batch_size=batch_size, cache=cache, role="document",
                  on_batch=progress("encoding documents", len(doc_ids)))
    codec, source = corpus_codec(bits, docs.float(), model_codec(model)) if bits else (None, None)
    if codec is not None:
        docs = codec.decode(codec.encode(docs))  # the angles the stored codes stand for

    if pools is None:
        return run_from_topk(qids, doc_ids, *exact_topk(queries, docs, top_k, model.similarity)), codec, source
    return run_from_pools(  # an empty pool ranks nothing: evaluate_run scores that query 0
        qids, doc_ids, pools,
        lambda row, positions: pairwise_scores(queries[row : row + 1], docs[positions], model.similarity)[0],
    ), codec, source


@dataclass
class Evaluation:
    """One model's run and metrics under one protocol."""

    protocol: str
    run: Run
    metrics: dict[str, float]  # mean over all judged queries
    per_query: dict[str, dict[str, float]]
    empty_queries: list[str] = field(default_factory=list)  # judged queries with nothing ranked (scored 0)
    judged_without_text: int = 0  # judged protocol: (query, document) judgements that could not be ranked
    codec: AngleCodes | None = None  # the documents' low-bit codes, when they were ranked as codes
    levels_source: str | None = None  # where the codec's levels came from


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
    bits: int | None = None,
) -> Evaluation:
    """`rank`, then the metrics against the collection's qrels at its relevance level: `metrics` are ir_measures
    names (`measure_run`: nDCG@10, AP...) or all older keys of `METRICS` (`evaluate_run`: ndcg_cut_10...)."""
    run, codec, source = _ranked(model, collection, protocol, first_stage=first_stage, top_k=top_k,
                                 batch_size=batch_size, cache=cache, progress=progress, bits=bits)
    if all(m in METRICS for m in metrics):  # the older keys, which training logs and recipes use
        mean, per_query = evaluate_run(run, collection.qrels, collection.relevance_level, metrics)
    else:
        mean, per_query = measure_run(run, collection.qrels, metrics, collection.relevance_level)
    empty = [q for q in collection.qrels if not run.get(q)]
    unranked = 0
    if protocol == "judged":
        unranked = sum(len(docs) - len(run.get(q, ())) for q, docs in collection.qrels.items())
    return Evaluation(protocol=protocol, run=run, metrics=mean, per_query=per_query, empty_queries=empty,
                      judged_without_text=unranked, codec=codec, levels_source=source)
