"""Ranking protocols, TREC metrics (pytrec_eval) and paired significance tests, for `qcompress evaluate`.

Protocols (SPEC §5): every number this module produces belongs to one of them, and every output names it.
    judged  re-rank, for each query, only the documents judged for it (the paper's protocol; NOT comparable with
            full-corpus retrieval or with BM25-top-1000 re-ranking)
    full    rank the whole corpus (exact top-k), like a dense retriever
    rerank  re-rank each query's candidates from a first-stage TREC run (e.g. BM25 top-1000)
For `judged` and `rerank` only the candidate documents are encoded, never the whole corpus.

Metrics: NDCG@10 (graded gains), RR@10, R@100, R@1000 and MAP, from pytrec_eval; RR, recall and MAP count
grades >= the collection's relevance level as relevant (2 for TREC DL passage). Every judged query is scored:
pytrec_eval silently drops queries absent from a run, so such queries get an explicit 0 here.

Example:
    >>> qrels = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    >>> mean, per_query = evaluate_run({"q1": {"d1": 0.9, "d2": 0.1}}, qrels)   # q2 has no results: 0
    >>> mean["ndcg_cut_10"], per_query["q2"]["ndcg_cut_10"]
    (0.5, 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from torch import Tensor

__all__ = [
    "PROTOCOLS",
    "METRICS",
    "Run",
    "evaluate_run",
    "cut_run",
    "candidates",
    "default_protocol",
    "collection_texts",
    "doc_texts",
    "Texts",
    "rank",
    "evaluate",
    "Evaluation",
    "exact_topk",
    "paired_randomization_test",
    "paired_t_test",
    "paired_test",
    "PairedTest",
]

Run = dict[str, dict[str, float]]  # qid -> {docid: score}, as pytrec_eval takes it
Progress = Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n)

# `pool` is `full` over a passage pool that stands in for a bigger corpus (the local TREC DL folder's 30k
# passages for MS MARCO's 8.8M): the same ranking, labelled apart because it is optimistic.
PROTOCOLS = ("judged", "full", "pool", "rerank")
# Metric key -> display name. Keys are pytrec_eval's names, except RR@10 (recip_rank on the run cut to 10).
METRICS = {
    "ndcg_cut_10": "NDCG@10",
    "recip_rank_10": "RR@10",
    "recall_100": "R@100",
    "recall_1000": "R@1000",
    "map": "MAP",
}


# -- metrics -----------------------------------------------------------------------------------------------------


def cut_run(run: Mapping[str, Mapping[str, float]], k: int) -> Run:
    """The best `k` documents per query, in trec_eval's order (score descending, ties: doc id descending).

    Example:
        >>> cut_run({"q": {"a": 1.0, "b": 1.0, "c": 0.5}}, 1)
        {'q': {'b': 1.0}}
    """
    return {
        qid: dict(sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)[:k])
        for qid, docs in run.items()
    }


def evaluate_run(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    relevance_level: int = 1,
    metrics: Sequence[str] = tuple(METRICS),
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean over every query in `qrels`, per-query values) of `metrics` for a run.

    Queries of `qrels` missing from the run (or with no documents) count as 0 on every metric; queries of the
    run without judgements are ignored. `relevance_level` applies to RR, recall and MAP; NDCG uses the grades.
    """
    import pytrec_eval

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    qrels = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    scored = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if q in qrels and docs}
    per_query = {q: {m: 0.0 for m in metrics} for q in qrels}
    plain = [m for m in metrics if m != "recip_rank_10"]
    if plain and scored:
        evaluator = pytrec_eval.RelevanceEvaluator(qrels, set(plain), relevance_level=relevance_level)
        for q, values in evaluator.evaluate(scored).items():
            per_query[q].update({m: float(values[m]) for m in plain})
    if "recip_rank_10" in metrics and scored:
        evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}, relevance_level=relevance_level)
        for q, values in evaluator.evaluate(cut_run(scored, 10)).items():
            per_query[q]["recip_rank_10"] = float(values["recip_rank"])
    n = len(per_query)
    mean = {m: (sum(v[m] for v in per_query.values()) / n if n else math.nan) for m in metrics}
    return mean, per_query


# -- significance --------------------------------------------------------------------------------------------------


def paired_randomization_test(
    a: Sequence[float], b: Sequence[float], n: int = 10_000, seed: int = 0
) -> float:
    """Two-sided paired randomization (sign-flip permutation) test of mean(a - b) = 0; returns the p-value.

    Each of `n` permutations swaps the two systems' values on a random subset of queries (numpy's PCG64 seeded
    with `seed`, so results are reproducible). p = (1 + #{|mean diff| >= observed}) / (n + 1).

    Example:
        >>> paired_randomization_test([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
        1.0
        >>> paired_randomization_test([1.0] * 12, [0.0] * 12) < 0.001
        True
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or len(a) != len(b):
        raise ValueError(f"paired values must be two sequences of the same length, got {len(a)} and {len(b)}")
    if d.size == 0:
        return math.nan
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, observed)  # identical sums in another order may differ in the last bit
    rng = np.random.default_rng(seed)
    extreme, done, step = 0, 0, max(1, 2_000_000 // d.size)  # bounded memory: step x queries signs at a time
    while done < n:
        m = min(step, n - done)
        signs = rng.integers(0, 2, size=(m, d.size), dtype=np.int8) * 2 - 1
        extreme += int((np.abs(signs @ d) / d.size >= observed - tolerance).sum())
        done += m
    return (extreme + 1) / (n + 1)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), for the t distribution without scipy."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided paired t-test of mean(a - b) = 0: (t statistic, p-value), Student's t with n-1 degrees of freedom.

    Example:
        >>> t, p = paired_t_test([1.0, 2.0, 3.0, 4.0], [0.5, 1.0, 2.0, 4.5])
        >>> round(t, 4), round(p, 4)
        (1.4142, 0.2522)
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"paired values must have the same length, got {len(a)} and {len(b)}")
    n = d.size
    if n < 2:
        return math.nan, math.nan
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        return (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / (sd / math.sqrt(n))
    df = n - 1
    return t, _betainc(df / 2.0, 0.5, df / (df + t * t))


@dataclass(frozen=True)
class PairedTest:
    """Two systems compared query by query: mean(a) - mean(b) and the two-sided p-values of two paired tests."""

    difference: float
    randomization_p: float  # sign-flip permutation test (`paired_randomization_test`)
    t: float  # paired t statistic (nan where undefined)
    t_p: float
    permutations: int
    seed: int


def paired_test(a: Sequence[float], b: Sequence[float], *, permutations: int = 10_000, seed: int = 0) -> PairedTest:
    """Compare per-query values of two systems (same queries, same order): the one significance test of qcompress.

    Example:
        >>> r = paired_test([0.5, 0.7, 0.9, 0.6], [0.4, 0.5, 0.6, 0.6])
        >>> round(r.difference, 3), r.randomization_p > 0.05
        (0.15, True)
    """
    t, t_p = paired_t_test(a, b)
    difference = float(np.mean(a) - np.mean(b)) if len(a) else math.nan
    return PairedTest(difference, paired_randomization_test(a, b, n=permutations, seed=seed), t, t_p,
                      permutations, seed)


# -- ranking -------------------------------------------------------------------------------------------------------


def exact_topk(queries: Tensor, docs: Tensor, k: int, similarity: str) -> tuple[Tensor, Tensor]:
    """Exact top-k (scores, indices), each (m, min(k, N)), by log-fidelity (angles) or cosine (vectors).

    `qcompress.search` does the work: exact results (ties to the lower index) at about the cost of a matmul.
    """
    from qcompress import search
    from qcompress.similarity import check_similarity

    if check_similarity(similarity) == "fidelity":
        return search.topk(queries, docs, k)
    return search.topk_cosine(queries, docs, k)


def candidates(
    qrels: Mapping[str, Mapping[str, int]],
    protocol: str,
    first_stage: Mapping[str, Mapping[str, float]] | None = None,
    top_k: int = 1000,
) -> dict[str, list[str]] | None:
    """Each judged query's documents to re-rank: its judged documents (`judged`), its best `top_k` first-stage
    documents (`rerank`; none for a query the first stage lacks), or None for `full`/`pool` (the whole corpus)."""
    check_protocol(protocol, first_stage)
    if protocol in ("full", "pool"):
        return None
    if protocol == "judged":
        return {qid: list(docs) for qid, docs in qrels.items()}
    cut = cut_run({q: first_stage[q] for q in qrels if q in first_stage}, top_k)  # type: ignore[index]
    return {qid: list(cut.get(qid, {})) for qid in qrels}


def check_protocol(protocol: str, first_stage: object = None) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "rerank" and first_stage is None:
        raise ValueError("--protocol rerank needs --first-stage RUN (a TREC run file, e.g. BM25 top-1000)")
    if protocol != "rerank" and first_stage is not None:
        raise ValueError(f"--first-stage is only used by --protocol rerank, not {protocol}")


def default_protocol(dataset: str | None) -> str:
    """The protocol a collection is evaluated with unless one is named: `full` for the bundled collections and
    BEIR folders, `rerank` for the local TREC DL evaluation sets (their BM25 run), `judged` for ir_datasets ids
    (the paper's protocol).

    Example:
        >>> default_protocol("cranfield"), default_protocol("msmarco-passage/trec-dl-2019/judged")
        ('full', 'judged')
    """
    from qcompress.data import BUNDLED
    from qcompress.data.trecdl import EVALUATION_SETS

    if dataset in EVALUATION_SETS:
        return "rerank"
    if dataset is None or dataset in BUNDLED or Path(dataset).is_dir():
        return "full"
    return "judged"


def doc_texts(corpus: Mapping[str, str], doc_ids: Sequence[str], name: str, *, judged: bool) -> dict[str, str]:
    """{doc id: text} of the candidates. Judged documents without text are left out (a pool of passages, such
    as qcompress.data.trecdl's, need not hold every judged one); a first-stage document without text is an error."""
    # ir_datasets corpora look many documents up in one docstore call; plain dicts one by one.
    get_many = getattr(corpus, "get_many", None)
    found = get_many(doc_ids) if get_many is not None else {d: corpus[d] for d in doc_ids if d in corpus}
    missing = [d for d in doc_ids if d not in found]
    if missing and not judged:
        raise ValueError(
            f"{len(missing)} candidate document(s) are not in the corpus of {name} (e.g. {missing[0]!r}); "
            "the first-stage run names documents of another collection"
        )
    return found


def _noop(description: str, total: int) -> Callable[[int], None]:
    return lambda n: None


@dataclass
class Texts:
    """The texts one protocol needs: judged queries, the documents to encode, and each query's candidates."""

    qids: list[str]
    query_texts: list[str]
    doc_ids: list[str]
    doc_texts: list[str]
    pools: dict[str, list[str]] | None  # None: rank the whole corpus


def collection_texts(
    collection,
    protocol: str,
    *,
    first_stage: Mapping[str, Mapping[str, float]] | None = None,
    top_k: int = 1000,
) -> Texts:
    """Queries, documents and candidate pools of `collection` under `protocol` (see `rank`): the whole corpus for
    full/pool, else the union of the candidates that have text, in first-seen order."""
    qids = list(collection.queries)
    if protocol == "rerank" and first_stage is None:
        first_stage = getattr(collection, "first_stage", None)
    pools = candidates(collection.qrels, protocol, first_stage, top_k)
    if pools is None:
        items = list(collection.corpus.items())  # one pass, also over a corpus streamed from ir_datasets
        doc_ids, texts = [d for d, _ in items], [t for _, t in items]
    else:
        union = list(dict.fromkeys(d for q in qids for d in pools[q]))  # first-seen order
        found = doc_texts(collection.corpus, union, collection.name, judged=protocol == "judged")
        pools = {q: [d for d in pools[q] if d in found] for q in qids}
        doc_ids = [d for d in union if d in found]
        texts = [found[d] for d in doc_ids]
    return Texts(qids, [collection.queries[q] for q in qids], doc_ids, texts, pools)


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
    candidates (see `candidates`); judged documents that the corpus has no text for cannot be ranked and are
    left out (NDCG's ideal ranking still counts them). `rerank` without `first_stage` uses the collection's
    own first stage where it ships one (TREC DL's BM25 run). `cache` is a `qcompress.cache.PooledCache` or
    None; `progress(description, total)` returns a callback advanced by the number of texts encoded.

    Example:
        >>> from qcompress.data import load_collection; from qcompress.model import build_model  # doctest: +SKIP
        >>> run = rank(build_model("minilm"), load_collection("cranfield"), "full", top_k=100)  # doctest: +SKIP
    """
    from qcompress.cache import encode
    from qcompress.similarity import pairwise_scores

    if top_k <= 0:
        raise ValueError(f"--top-k must be positive, got {top_k}")
    progress = progress or _noop
    gathered = collection_texts(collection, protocol, first_stage=first_stage, top_k=top_k)
    qids, doc_ids, pools = gathered.qids, gathered.doc_ids, gathered.pools
    queries = encode(model, gathered.query_texts, batch_size=batch_size, cache=cache,
                     on_batch=progress("encoding queries", len(qids)))
    docs = encode(model, gathered.doc_texts, batch_size=batch_size, cache=cache,
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

    @property
    def queries(self) -> int:
        return len(self.per_query)


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
    """`rank`, then `evaluate_run` against the collection's qrels at its relevance level."""
    run = rank(model, collection, protocol, first_stage=first_stage, top_k=top_k, batch_size=batch_size,
               cache=cache, progress=progress)
    mean, per_query = evaluate_run(run, collection.qrels, collection.relevance_level, metrics)
    empty = [q for q in collection.qrels if not run.get(q)]
    unranked = 0
    if protocol == "judged":
        unranked = sum(len(docs) - len(run.get(q, ())) for q, docs in collection.qrels.items())
    return Evaluation(protocol=protocol, run=run, metrics=mean, per_query=per_query, empty_queries=empty,
                      judged_without_text=unranked)
