"""A collection for training and evaluation: a corpus, the judged queries of one split, and their judgements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Collection", "positives"]


@dataclass
class Collection:
    """A corpus, the judged queries of one split, and their judgements.

    Texts follow BEIR's rule: title + " " + text, stripped. `relevance_level` is the grade that RR, recall and
    MAP count as relevant; NDCG uses the graded labels.

    Example:
        >>> from qcompress.data import load_collection
        >>> c = load_collection("cranfield", split="test")
        >>> len(c.corpus), len(c.queries), c.relevance_level
        (1398, 112, 1)
    """

    name: str  # "cranfield", a folder path, or an ir_datasets id
    corpus: Mapping[str, str]  # doc id -> text (title + " " + text, stripped)
    queries: dict[str, str]  # query id -> text (only queries of this split with judgements)
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade}, this split only
    split: str
    relevance_level: int = 1  # min grade counted relevant by RR/recall/MAP (2 for TREC DL passage)
    hard_negatives: Mapping[str, list[str]] | None = None  # qid -> negative doc ids, when the dataset ships them
    first_stage: dict[str, dict[str, float]] | None = None  # a run shipped with the collection (TREC DL: BM25)


def positives(qrels_for_query: Mapping[str, int], level: int = 1) -> list[str]:
    """Doc ids judged at least `level` for one query, in judgement order (grades <= 0 are judged non-relevant).

    Training uses only queries with at least one positive.

    Example:
        >>> positives({"d1": 0, "d2": 3, "d3": 1}, level=2)
        ['d2']
    """
    return [doc_id for doc_id, grade in qrels_for_query.items() if grade >= level]
