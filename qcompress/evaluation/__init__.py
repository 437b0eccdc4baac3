"""Evaluation: rank a test collection under a named protocol, score the run with TREC metrics, compare models.

    protocols.py  which documents each judged query is ranked against (judged, full, pool, rerank)
    ranking.py    rank and evaluate one model (exact top-k or candidate re-ranking, through the pooled cache)
    metrics.py    ir_measures measures (nDCG@10, RR@10, R@100, AP...) computed by pytrec_eval; every judged query
                  scored
    stats.py      paired permutation tests (scipy's, and the recipes' seeded numpy one), the t-test, Holm
    compare.py    several models against the first: what `qcompress evaluate` runs

Every public name of the submodules is importable from here: `from qcompress.evaluation import evaluate`.
"""

from qcompress._lazy import attach

__all__ = [
    "PROTOCOLS",
    "METRICS",
    "Run",
    "evaluate_run",
    "cut_run",
    "candidates",
    "check_protocol",
    "choose_protocol",
    "default_protocol",
    "collection_texts",
    "doc_texts",
    "Texts",
    "rank",
    "evaluate",
    "Evaluation",
    "Progress",
    "exact_topk",
    "paired_randomization_test",
    "paired_t_test",
    "paired_test",
    "PairedTest",
    "compare",
    "Comparison",
    "ModelResult",
    "SIGNIFICANCE_METRIC",
    "run_tag",
    "DEFAULT_MEASURES",
    "measure_names",
    "measure_run",
    "scipy_paired_test",
    "holm",
    "Significance",
    "UnknownDocuments",
]

# Imported on first use (qcompress._lazy): the command line names these without loading torch or pytrec_eval.
__getattr__, __dir__ = attach(__name__, {
    "SIGNIFICANCE_METRIC": "compare", "Comparison": "compare", "ModelResult": "compare", "compare": "compare",
    "run_tag": "compare", "Significance": "compare",
    "METRICS": "metrics", "Run": "metrics", "cut_run": "metrics", "evaluate_run": "metrics",
    "DEFAULT_MEASURES": "metrics", "measure_names": "metrics", "measure_run": "metrics",
    "PROTOCOLS": "protocols", "Texts": "protocols", "candidates": "protocols", "check_protocol": "protocols",
    "choose_protocol": "protocols", "collection_texts": "protocols", "default_protocol": "protocols",
    "doc_texts": "protocols", "UnknownDocuments": "protocols",
    "Evaluation": "ranking", "Progress": "ranking", "evaluate": "ranking", "exact_topk": "ranking",
    "rank": "ranking",
    "PairedTest": "stats", "paired_randomization_test": "stats", "paired_t_test": "stats", "paired_test": "stats",
    "scipy_paired_test": "stats", "holm": "stats",
})
