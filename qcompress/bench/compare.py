"""Paired comparisons of bench rows at equal bytes: does a method lead, tie or trail the best other one?

Two rows of one bench were measured on the same queries, so each comparison is paired: per query set and measure,
the difference of the means over seeds and queries, its 95% confidence interval and p-value from the seed-aware
test (`qcompress.evaluation.seed_stats`: a randomised method's seed-to-seed spread is part of the unit), and
Holm's adjustment over every comparison of the table (both measures, every budget: one family). The reading is
said plainly from the adjusted p: "leads" or "trails" when it is below 0.05, "no significant difference" otherwise
(none this many queries and seeds can resolve: not a tie; the interval says how large one could still be).

The default comparisons (`leader_pairs`): at each budget, the best split of a method family (the quantum head)
against the best row of any other family in that budget. The best split is chosen on the same queries it is then
tested on, which favours it slightly; the other side is chosen the same way.

Example:
    >>> runs = [{"label": "a", "family": "a", "seed": None, "bytes_stored": 8.0, "budgets": [8],
    ...          "per_query": {"pseudo-queries": {"recall@10": [0.9, 0.8, 0.7, 0.9]}}},
    ...         {"label": "b", "family": "b", "seed": None, "bytes_stored": 8.0, "budgets": [8],
    ...          "per_query": {"pseudo-queries": {"recall@10": [0.5, 0.4, 0.5, 0.6]}}}]
    >>> [row["reading"] for row in compare(runs, [("a", "b", 8.0)], measures=(("pseudo-queries", "recall@10"),))]
    ['leads']
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from qcompress.evaluation.seed_stats import holm, seed_aware_test

__all__ = ["MEASURES", "per_query", "compare", "leader_pairs", "reading"]

MEASURES = (("pseudo-queries", "recall@10"), ("queries", "ndcg@10"))
ALPHA = 0.05
NOT_SIGNIFICANT = "no significant difference"  # not "level": the interval may still be wide


def per_query(runs: Sequence[dict], label: str, query_set: str, measure: str) -> np.ndarray | None:
    """The (seeds x queries) matrix of a row's per-query values; None when the row lacks that measure."""
    rows = [run["per_query"].get(query_set, {}).get(measure) for run in runs if run["label"] == label]
    if not rows or any(r is None for r in rows):
        return None
    return np.asarray(rows, dtype=np.float64)


def reading(difference: float, p_adjusted: float | None) -> str:
    """"leads" / "trails" when the adjusted p is below 0.05, else "no significant difference"."""
    if p_adjusted is None or p_adjusted >= ALPHA:
        return NOT_SIGNIFICANT
    return "leads" if difference > 0 else "trails"


def compare(runs: Sequence[dict], pairs: Iterable[tuple[str, str, float]],
            measures: Sequence[tuple[str, str]] = MEASURES) -> list[dict]:
    """One entry per (pair, measure) both rows have: Δ = first − second, interval, p, Holm's p, reading."""
    out = []
    for first, second, budget in pairs:
        for query_set, measure in measures:
            a, b = per_query(runs, first, query_set, measure), per_query(runs, second, query_set, measure)
            if a is None or b is None:
                continue
            test = seed_aware_test(a, b)
            low, high = test.interval(0.95)
            out.append({"budget": budget, "first": first, "second": second, "query_set": query_set,
                        "measure": measure, "difference": test.difference, "interval": [low, high], "p": test.p,
                        "seeds": list(test.seeds), "queries": test.queries})
    for entry, adjusted in zip(out, holm([e["p"] for e in out])):
        entry.update(p_holm=adjusted, reading=reading(entry["difference"], adjusted))
    return out


def leader_pairs(rows: Sequence[dict], family: str) -> list[tuple[str, str, float]]:
    """At each budget where `family` has a row: (its best split, the best row of another family), from the
    ranked summary rows (`qcompress.bench.report.summary_rows`: sorted by budget, best first)."""
    pairs = []
    for budget in dict.fromkeys(row["budget"] for row in rows):
        here = [row for row in rows if row["budget"] == budget]
        mine = [row for row in here if row["method"] == family]
        others = [row for row in here if row["method"] != family]
        if mine and others:
            pairs.append((mine[0]["label"], others[0]["label"], budget))
    return pairs
