"""TREC metrics of a run against judgements, named as ir_measures names them and computed by pytrec_eval, with every
judged query scored.

Measures are ir_measures names: nDCG@10, RR@10, R@100, R@1000, AP, P@5, AP(rel=2), ... (https://ir-measur.es).
A measure that counts documents as relevant or not (RR, R, AP, P...) and names no `rel` counts the collection's
relevance level (2 for TREC DL passage), and its name then says so: AP on TREC DL is reported as AP(rel=2).
NDCG uses the graded judgements. pytrec_eval computes them through ir_measures' pytrec_eval provider; RR@k is
pytrec_eval's recip_rank on the run cut to k in trec_eval's order (`cut_run`), as that provider has no RR@k.
pytrec_eval silently drops queries absent from a run, so such queries get an explicit 0 here.

`evaluate_run` keeps the older pytrec_eval keys (ndcg_cut_10, recip_rank_10, recall_100, recall_1000, map), which
training logs and recipe results use; the numbers are the same.

Example:
    >>> qrels = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    >>> mean, per_query = measure_run({"q1": {"d1": 0.9, "d2": 0.1}}, qrels)   # q2 has no results: 0
    >>> mean["nDCG@10"], per_query["q2"]["RR@10"]
    (0.5, 0.0)
    >>> measure_names(["AP", "nDCG@10", "RR(rel=1)@10"], relevance_level=2)
    ['AP(rel=2)', 'nDCG@10', 'RR@10']
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import ir_measures

from qcompress.errors import InputError

__all__ = ["DEFAULT_MEASURES", "METRICS", "Run", "cut_run", "deeper_than", "measure_names", "measure_run",
           "evaluate_run"]

Run = dict[str, dict[str, float]]  # qid -> {docid: score}, as pytrec_eval takes it

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000", "AP")
# The older keys (pytrec_eval's names; RR@10 is recip_rank on the run cut to 10) -> display name = measure.
METRICS = {
    "ndcg_cut_10": "NDCG@10",
    "recip_rank_10": "RR@10",
    "recall_100": "R@100",
    "recall_1000": "R@1000",
    "map": "MAP",
}
_MEASURE_OF_KEY = dict(zip(METRICS, DEFAULT_MEASURES))


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


def _parse(name: str, relevance_level: int):
    try:
        measure = ir_measures.parse_measure(name.strip())
    except (NameError, ValueError, SyntaxError, KeyError) as err:
        raise InputError(f"{name!r} is not an ir_measures name ({err}); e.g. nDCG@10, RR@10, R@100, AP, "
                         "AP(rel=2), P@5 (https://ir-measur.es)", field="metric") from None
    params = dict(measure.params)
    unknown = sorted(set(params) - set(measure.SUPPORTED_PARAMS))
    if unknown:
        raise InputError(f"{name!r}: {measure.NAME} takes no {', '.join(unknown)}", field="metric")
    if "rel" in measure.SUPPORTED_PARAMS and "rel" not in params and relevance_level != 1:
        measure = measure(rel=relevance_level)
    elif params.get("rel") == 1:  # rel=1 is ir_measures' default: one name for one measure
        measure = ir_measures.parse_measure(measure.NAME)(**{k: v for k, v in params.items() if k != "rel"})
    return measure


def deeper_than(names: Sequence[str], depth: int, relevance_level: int = 1) -> list[tuple[str, int]]:
    """(canonical name, cutoff) of the measures of `names` that count more documents per query than `depth`, the
    documents a run ranks: R@100 of a run of 10 documents is the recall of those 10.

    Example:
        >>> deeper_than(["nDCG@10", "R@100", "AP", "R@1000"], 100)
        [('R@1000', 1000)]
    """
    measures = [_parse(name, relevance_level) for name in names]
    return [(str(m), m.params["cutoff"]) for m in measures if m.params.get("cutoff", 0) > depth]


def measure_names(names: Sequence[str], relevance_level: int = 1) -> list[str]:
    """The canonical ir_measures name of each of `names` as `measure_run` computes and reports it (the
    relevance level applied where a measure names no `rel`); InputError (field "metric") for an unknown one."""
    return [str(_parse(name, relevance_level)) for name in names]


def _pytrec_eval_values(measures: list, qrels: dict, run: Run) -> dict[str, dict[str, float]]:
    """{measure name: {qid: value}} from ir_measures' pytrec_eval provider (any provider for measures it lacks)."""
    provider = ir_measures.pytrec_eval
    values: dict[str, dict[str, float]] = {str(m): {} for m in measures}
    rr_cut = [m for m in measures if m.NAME == "RR" and "cutoff" in m.params]
    plain = [m for m in measures if m not in rr_cut]
    native = [m for m in plain if provider.supports(m)]
    for source, wanted in ((provider, native), (ir_measures, [m for m in plain if m not in native])):
        if wanted:
            for metric in source.iter_calc(wanted, qrels, run):
                values[str(metric.measure)][metric.query_id] = float(metric.value)
    for measure in rr_cut:
        params = {k: v for k, v in measure.params.items() if k != "cutoff"}
        uncut = ir_measures.parse_measure("RR")(**params)
        for metric in provider.iter_calc([uncut], qrels, cut_run(run, measure.params["cutoff"])):
            values[str(measure)][metric.query_id] = float(metric.value)
    return values


def measure_run(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    measures: Sequence[str] = DEFAULT_MEASURES,
    relevance_level: int = 1,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean over every query in `qrels`, per-query values) of ir_measures `measures`, keyed by their canonical
    names (`measure_names`).

    Queries of `qrels` missing from the run (or with no documents) count as 0 on every measure; queries of the
    run without judgements are ignored.
    """
    parsed = list(dict.fromkeys(_parse(name, relevance_level) for name in measures))
    qrels = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    scored = {q: {d: float(s) for d, s in docs.items()} for q, docs in run.items() if q in qrels and docs}
    values = _pytrec_eval_values(parsed, qrels, scored) if scored else {str(m): {} for m in parsed}
    per_query = {q: {name: by_query.get(q, 0.0) for name, by_query in values.items()} for q in qrels}
    n = len(per_query)
    mean = {name: (sum(v[name] for v in per_query.values()) / n if n else math.nan) for name in values}
    return mean, per_query


def evaluate_run(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    relevance_level: int = 1,
    metrics: Sequence[str] = tuple(METRICS),
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """`measure_run` under the older keys of `METRICS` (ndcg_cut_10, recip_rank_10, recall_100, recall_1000,
    map), which training logs and recipe results use. `relevance_level` applies to RR, recall and MAP.

    Example:
        >>> evaluate_run({"q1": {"d1": 0.9}}, {"q1": {"d1": 1}}, metrics=["ndcg_cut_10"])[0]
        {'ndcg_cut_10': 1.0}
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    names = dict(zip(metrics, measure_names([_MEASURE_OF_KEY[m] for m in metrics], relevance_level)))
    mean, per_query = measure_run(run, qrels, [_MEASURE_OF_KEY[m] for m in metrics], relevance_level)
    return ({key: mean[name] for key, name in names.items()},
            {q: {key: values[name] for key, name in names.items()} for q, values in per_query.items()})
