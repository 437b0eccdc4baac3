"""TREC metrics of a run against judgements, from pytrec_eval, with every judged query scored.

Metrics: NDCG@10 (graded gains), RR@10, R@100, R@1000 and MAP; RR, recall and MAP count grades >= the
collection's relevance level as relevant (2 for TREC DL passage). pytrec_eval silently drops queries absent from a
run, so such queries get an explicit 0 here.

Example:
    >>> qrels = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    >>> mean, per_query = evaluate_run({"q1": {"d1": 0.9, "d2": 0.1}}, qrels)   # q2 has no results: 0
    >>> mean["ndcg_cut_10"], per_query["q2"]["ndcg_cut_10"]
    (0.5, 0.0)
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import pytrec_eval

__all__ = ["METRICS", "Run", "cut_run", "evaluate_run"]

Run = dict[str, dict[str, float]]  # qid -> {docid: score}, as pytrec_eval takes it

# Metric key -> display name. Keys are pytrec_eval's names, except RR@10 (recip_rank on the run cut to 10).
METRICS = {
    "ndcg_cut_10": "NDCG@10",
    "recip_rank_10": "RR@10",
    "recall_100": "R@100",
    "recall_1000": "R@1000",
    "map": "MAP",
}


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
