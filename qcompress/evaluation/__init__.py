"""Evaluation: rank a test collection under a named protocol, score the run with TREC metrics, compare models.

    protocols.py  which documents each judged query is ranked against (judged, full, pool, rerank)
    ranking.py    rank and evaluate one model (exact top-k or candidate re-ranking, through the pooled cache)
    metrics.py    NDCG@10, RR@10, R@100, R@1000, MAP from pytrec_eval; every judged query scored
    stats.py      paired randomization test and paired t-test
    compare.py    several models against the first: what `qcompress evaluate` runs

Every public name of the submodules is importable from here: `from qcompress.evaluation import evaluate`.
"""

from qcompress.evaluation.compare import SIGNIFICANCE_METRIC, Comparison, ModelResult, compare, run_tag
from qcompress.evaluation.metrics import METRICS, Run, cut_run, evaluate_run
from qcompress.evaluation.protocols import (
    PROTOCOLS, Texts, candidates, check_protocol, choose_protocol, collection_texts, default_protocol, doc_texts,
)
from qcompress.evaluation.ranking import Evaluation, Progress, evaluate, exact_topk, rank
from qcompress.evaluation.stats import PairedTest, paired_randomization_test, paired_t_test, paired_test

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
]
