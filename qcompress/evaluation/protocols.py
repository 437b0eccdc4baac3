"""Ranking protocols: which documents each judged query is ranked against (SPEC §5).

Every number qcompress evaluates belongs to one protocol, and every output names it:
    judged  re-rank, for each query, only the documents judged for it (the paper's protocol; NOT comparable with
            full-corpus retrieval or with BM25-top-1000 re-ranking)
    full    rank the whole corpus (exact top-k), like a dense retriever
    pool    `full` over a passage pool that stands in for a bigger corpus (the local TREC DL folder's 30k
            passages for MS MARCO's 8.8M): the same ranking, labelled apart because it is optimistic
    rerank  re-rank each query's candidates from a first-stage TREC run (e.g. BM25 top-1000)
For `judged` and `rerank` only the candidate documents are encoded, never the whole corpus.

Example:
    >>> candidates({"q1": {"d1": 1, "d2": 0}}, "rerank", first_stage={"q1": {"d3": 2.0, "d1": 1.0}}, top_k=1)
    {'q1': ['d3']}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from qcompress.data import BUNDLED
from qcompress.errors import InputError
from qcompress.evaluation.metrics import cut_run
from qcompress.data.trecdl import EVALUATION_SETS

__all__ = ["PROTOCOLS", "check_protocol", "choose_protocol", "default_protocol", "candidates", "doc_texts",
           "Texts", "collection_texts", "UnknownDocuments"]

PROTOCOLS = ("judged", "full", "pool", "rerank")


def check_protocol(protocol: str, first_stage: object = None) -> None:
    """Refuse an unknown protocol, `rerank` without a first-stage run, and a first-stage run under another
    protocol (InputError whose field names the parameter at fault)."""
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}", field="protocol")
    if protocol == "rerank" and first_stage is None:
        raise InputError("protocol rerank needs a first-stage run (a TREC run, e.g. BM25 top-1000)",
                         field="first_stage")
    if protocol != "rerank" and first_stage is not None:
        raise InputError(f"is only used by protocol rerank, not {protocol}", field="first_stage")


def default_protocol(dataset: str | None) -> str:
    """The protocol a collection is evaluated with unless one is named: `full` for the bundled collections, BEIR
    folders and BEIR's ir_datasets ids (beir/..., ranked against the whole corpus as BEIR and MTEB report them),
    `rerank` for the local TREC DL evaluation sets (their BM25 run), `judged` for other ir_datasets ids (the
    paper's protocol).

    Example:
        >>> default_protocol("cranfield"), default_protocol("beir/scifact")
        ('full', 'full')
        >>> default_protocol("msmarco-passage/trec-dl-2019/judged")
        'judged'
    """
    if dataset in EVALUATION_SETS:
        return "rerank"
    if dataset is None or dataset in BUNDLED or dataset.startswith("beir/") or Path(dataset).is_dir():
        return "full"
    return "judged"


def choose_protocol(dataset: str | None, protocol: str | None = None, *, first_stage: object = None) -> str:
    """The protocol to evaluate `dataset` (a `qcompress.data.load_collection` name) with: `protocol` where
    given, else `rerank` when a first-stage run (or its file) is given, else `default_protocol(dataset)`.

    Refused with an InputError whose field names the parameter at fault: an unknown protocol (`protocol`),
    `pool` on anything but a local TREC DL evaluation set (`dataset`), a first-stage run under another protocol
    than rerank (`first_stage`). Whether `rerank` has a first stage is checked once the collection, which may
    ship one, is loaded (`collection_texts`).

    Example:
        >>> choose_protocol("cranfield"), choose_protocol("cranfield", first_stage="bm25.trec")
        ('full', 'rerank')
    """
    if protocol is None:
        protocol = "rerank" if first_stage is not None else default_protocol(dataset)
    if protocol == "pool" and dataset not in EVALUATION_SETS:
        raise InputError(f"protocol pool ranks the passage pool of a local TREC DL evaluation set "
                         f"({', '.join(EVALUATION_SETS)}); use protocol full to rank a whole corpus", field="dataset")
    if protocol != "rerank":
        check_protocol(protocol, first_stage)
    return protocol


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


def doc_texts(corpus: Mapping[str, str], doc_ids: Sequence[str], name: str, *, judged: bool) -> dict[str, str]:
    """{doc id: text} of the candidates. Judged documents without text are left out (a pool of passages, such
    as qcompress.data.trecdl's, need not hold every judged one); a first-stage document without text is an error."""
    # ir_datasets corpora look many documents up in one docstore call; plain dicts one by one.
    get_many = getattr(corpus, "get_many", None)
    found = get_many(doc_ids) if get_many is not None else {d: corpus[d] for d in doc_ids if d in corpus}
    missing = [d for d in doc_ids if d not in found]
    if missing and not judged:
        raise UnknownDocuments(missing, name)
    return found


class UnknownDocuments(InputError):
    """First-stage candidates without text in the corpus (`doc_ids`, in candidate order): the run belongs to
    another collection. The CLI names the run file's line from `doc_ids[0]`."""

    def __init__(self, doc_ids: Sequence[str], collection: str) -> None:
        self.doc_ids = list(doc_ids)
        super().__init__(f"{len(doc_ids)} candidate document(s) are not in the corpus of {collection} (e.g. "
                         f"{doc_ids[0]!r}); the first-stage run names documents of another collection",
                         field="first_stage")


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
    """Queries, documents and candidate pools of `collection` under `protocol` (see `qcompress.evaluation.rank`):
    the whole corpus for full/pool, else the union of the candidates that have text, in first-seen order.
    `rerank` without `first_stage` uses the collection's own first stage where it ships one."""
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
