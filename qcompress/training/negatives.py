"""Training examples: (query, one positive, N hard negatives), as index tensors.

    positives   documents judged >= the collection's relevance level; one example per (query, positive) pair
    negatives   the dataset's own hard negatives where it ships them (ir_datasets docpairs, TREC DL's judged-0
                passages), topped up or replaced, for an in-memory corpus, by MINED ones: the top-ranked documents
                of the corpus by cosine of the untrained encoder's pooled outputs that are not judged relevant
                (grade > 0) for the query. Mining uses the encoder alone, never the random head, so every variant
                on one encoder trains on the same negatives (a fair comparison). Queries with fewer than N
                negatives are left out (and counted).
    cache       mined negatives under CACHE/negatives/ (JSON, with their digest, checked when read), keyed by
                encoder weights, pooling, prompts, max length, dataset, split, judgements, the texts' digest and N; pooled encoder outputs in qcompress.cache.PooledCache
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import Tensor

from qcompress.atomic import atomic_file
from qcompress.cache import PooledCache, encoder_key, pool_texts
from qcompress.data import positives
from qcompress.errors import InputError, json_loads
from qcompress.integrity import bytes_digest
from qcompress.similarity import pairwise_scores
from qcompress.training.checkpoint import data_digest
from qcompress.training.config import ArgumentError, Progress

__all__ = ["Examples", "ENCODE_BATCH", "pooled_outputs", "mine_negatives", "dataset_negatives", "build_examples",
           "no_examples_error"]

ENCODE_BATCH = 64  # texts per encoder batch when pooling outside the training step
MINING_BLOCK = 256  # queries scored against the corpus at once


@dataclass
class Examples:
    """Training examples as index tensors: example i is (query ex_query[i], documents ex_docs[i]), the positive
    first, then the negatives. Queries and documents are numbered in `query_ids` / `doc_ids`."""

    query_ids: list[str]
    query_texts: list[str]
    doc_ids: list[str]
    doc_texts: list[str]
    ex_query: Tensor  # (n,) long
    ex_docs: Tensor  # (n, 1 + negatives) long
    relevant: list[set[str]]  # per query index: doc ids judged relevant (grade > 0), masked as in-batch negatives
    dropped_queries: int = 0  # queries left out for lack of negatives

    def __len__(self) -> int:
        return int(self.ex_query.shape[0])


def pooled_outputs(model, texts: Sequence[str], cache_dir: Path | None, on_batch=None, *, role: str) -> Tensor:
    """Pooled encoder outputs (len(texts), in_dim) of queries or documents (`role`: the model's prompt for it),
    read from / added to the pooled cache when given."""
    cache = PooledCache(cache_dir, model) if cache_dir is not None else None
    return pool_texts(model, list(texts), cache=cache, batch_size=ENCODE_BATCH, on_batch=on_batch, role=role)


def _relevant(judged: Mapping[str, int]) -> set[str]:
    return {d for d, grade in judged.items() if grade > 0}


def _negatives_key(model, collection, n: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    name = str(Path(collection.name).resolve()) if Path(collection.name).is_dir() else collection.name
    # The judgements themselves are part of the key: editing a qrels file must not reuse stale negatives.
    qrels = json.dumps(collection.qrels, sort_keys=True)
    prompts = (model.config.query_prompt, model.config.document_prompt)  # they change the pooled outputs
    # So are the texts (a corpus edited under the same path, same size, must not reuse negatives mined on the old
    # texts); a lazily read corpus is counted only (qcompress.training.checkpoint.data_digest).
    texts = data_digest(documents=collection.corpus if not isinstance(collection.corpus, dict) else
                        collection.corpus.items(), queries=collection.queries.items())
    parts = (encoder_key(model), *prompts, name, collection.split, n, collection.relevance_level, texts, qrels)
    for part in parts:
        h.update(repr(part).encode() + b"\0")
    return h.hexdigest()


def mine_negatives(
    model, collection, n: int, *, cache_dir: Path | None = None, progress: Progress | None = None
) -> dict[str, list[str]]:
    """qid -> the top `n` documents (best first) by cosine of the encoder's pooled outputs that are not judged
    relevant to the query (grade > 0), for every judged query. Call it before training: it uses `model`'s
    encoder as it is. The result is cached under CACHE/negatives/ (keyed by encoder weights, max length,
    dataset, split, judgements and n), written atomically.
    """
    path = None
    if cache_dir is not None:
        path = cache_dir / "negatives" / f"{_negatives_key(model, collection, n)}.json"
        cached = _read_cached(path) if path.is_file() else None
        if cached is not None:
            return cached
    progress = progress or (lambda description, total: None)
    items = list(collection.corpus.items())
    doc_ids, texts = [d for d, _ in items], [t for _, t in items]
    qids = list(collection.queries)
    docs = pooled_outputs(model, texts, cache_dir, progress("mining negatives: encoding corpus", len(texts)),
                          role="document")
    queries = pooled_outputs(model, [collection.queries[q] for q in qids], cache_dir,
                             progress("mining negatives: encoding queries", len(qids)), role="query")
    found: dict[str, list[str]] = {}
    for start in range(0, len(qids), MINING_BLOCK):
        block = qids[start : start + MINING_BLOCK]
        scores = pairwise_scores(queries[start : start + len(block)], docs, "cosine")
        k = min(len(doc_ids), n + max(len(_relevant(collection.qrels[q])) for q in block))
        top = torch.topk(scores, k, dim=1).indices.tolist()
        for qid, row in zip(block, top):
            relevant = _relevant(collection.qrels[qid])
            found[qid] = [doc_ids[j] for j in row if doc_ids[j] not in relevant][:n]
    if path is not None:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps({"negatives": found, "digest": _digest(found)}))
    return found


def _digest(found: dict[str, list[str]]) -> str:
    return bytes_digest(json.dumps(found, sort_keys=True).encode())


def _read_cached(path: Path) -> dict[str, list[str]] | None:
    """Mined negatives from the cache, checked against their digest; None for a file of an older qcompress (no
    digest: mined again). A damaged or altered file is an `InputError` naming it."""
    try:
        data = json_loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"damaged cache file ({err}); delete it (the cache only saves time)", file=path) from None
    if not isinstance(data, dict) or "digest" not in data:
        return None
    found = data.get("negatives")
    if not isinstance(found, dict) or data["digest"] != _digest(found):
        raise InputError("damaged cache file (its negatives do not match their digest); delete it (the cache only "
                         "saves time)", file=path)
    return found


def dataset_negatives(
    model, collection, n: int, cache_dir: Path | None, progress: Progress | None
) -> tuple[Mapping[str, list[str]], str]:
    """(qid -> negatives, source): the dataset's hard negatives where it has n for a query; otherwise, when the
    corpus is in memory, mined ones (topping up the dataset's). Never mines a lazily read corpus (MS MARCO)."""
    hard = collection.hard_negatives
    if hard is None:
        return mine_negatives(model, collection, n, cache_dir=cache_dir, progress=progress), "mined"
    wanted = [q for q in collection.queries if positives(collection.qrels[q], collection.relevance_level)]
    lacking = [q for q in wanted if len(hard.get(q, ())) < n]
    if not lacking or not isinstance(collection.corpus, dict):
        return hard, "dataset"
    mined = mine_negatives(model, collection, n, cache_dir=cache_dir, progress=progress)
    merged = {}
    for q in wanted:
        own = list(hard.get(q, ()))[:n]
        merged[q] = own + [d for d in mined.get(q, []) if d not in own][: n - len(own)]
    return merged, "dataset+mined"


def build_examples(
    collection, negatives: Mapping[str, Sequence[str]], n: int, *, fraction: float = 1.0, seed: int = 42
) -> Examples:
    """One example per (query, positive) with the query's first `n` negatives.

    Queries need a positive (grade >= relevance level) and `n` negatives; with `fraction` < 1 a seeded random
    max(1, round(fraction * queries)) of those are kept (the data-scarcity study), in collection order.

    Example:
        >>> from types import SimpleNamespace as C
        >>> c = C(queries={"q": "wing"}, qrels={"q": {"d1": 2, "d2": 0}}, corpus={"d1": "a", "d2": "b", "d3": "c"},
        ...       relevance_level=1)
        >>> build_examples(c, {"q": ["d2", "d3"]}, 1).ex_docs.tolist()
        [[0, 1]]
    """
    eligible, dropped = [], 0
    for qid in collection.queries:
        if not positives(collection.qrels.get(qid, {}), collection.relevance_level):
            continue
        if len(negatives.get(qid, [])) < n:
            dropped += 1
            continue
        eligible.append(qid)
    if fraction < 1.0 and eligible:
        keep = max(1, round(fraction * len(eligible)))
        chosen = torch.randperm(len(eligible), generator=torch.Generator().manual_seed(seed))[:keep]
        eligible = [eligible[i] for i in sorted(chosen.tolist())]
    doc_index: dict[str, int] = {}
    ex_query, ex_docs = [], []
    for qi, qid in enumerate(eligible):
        negs = list(negatives.get(qid, []))[:n]
        for pos in positives(collection.qrels[qid], collection.relevance_level):
            ex_query.append(qi)
            ex_docs.append([doc_index.setdefault(d, len(doc_index)) for d in [pos, *negs]])
    doc_ids = list(doc_index)
    get_many = getattr(collection.corpus, "get_many", None)  # ir_datasets corpora: one docstore call
    texts = get_many(doc_ids) if get_many is not None else {d: collection.corpus[d] for d in doc_ids}
    return Examples(
        query_ids=eligible,
        query_texts=[collection.queries[q] for q in eligible],
        doc_ids=doc_ids,
        doc_texts=[texts[d] for d in doc_ids],
        ex_query=torch.tensor(ex_query, dtype=torch.long),
        ex_docs=torch.tensor(ex_docs, dtype=torch.long).reshape(len(ex_query), n + 1),
        relevant=[_relevant(collection.qrels[q]) for q in eligible],
        dropped_queries=dropped,
    )


def no_examples_error(collection, split: str, n: int, examples: Examples) -> ArgumentError:
    """Why `examples` is empty: queries short of `n` negatives, or no positive judgement at all."""
    reason = (
        f"{examples.dropped_queries} judged queries had fewer than {n} negatives"
        if examples.dropped_queries
        else f"no query has a document judged >= {collection.relevance_level}"
    )
    return ArgumentError("no training examples in {name} split {split!r}: {reason}; check the judgements, or lower "
                         "{negatives}", name=collection.name, split=split, reason=reason)
