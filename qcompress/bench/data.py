"""The bench's texts: the documents a method is fit on, the documents it is evaluated on, and the queries.

Fit and evaluated documents come from one of three splits:

    fraction      (the default) a seeded random share of CORPUS is fit on, the rest evaluated; documents with the
                  same text go to the same side, so that no text is on both
    fit corpus    a second corpus is fit on and the whole CORPUS evaluated
    transductive  fit on the whole CORPUS and evaluated on it (what docs/results.md's tables before issue 24 did)

An inductive split (the first two) refuses fit and evaluated documents that share an id or a text
(`check_disjoint`): a method must never be scored on documents it was fit on.

Queries: pseudo-queries (`pseudo_query_set`: sampled evaluated documents, or a seeded span of 4-16 words of each,
`qcompress.training.distill.pseudo_queries`), whose own document is left out of every ranking; and the queries a
collection judges for `split` (or `--queries` files), with their judgements (`--qrels`) when there are some.
Judgements of fit documents are dropped (they cannot be retrieved); a query with no positive judgement left is
scored for recall but not for NDCG.

Example:
    >>> docs = Documents(["a", "b", "c", "d"], ["one", "two", "three", "two"])
    >>> fit, evaluated = split_documents(docs, 0.5, seed=0)
    >>> sorted(fit.texts + evaluated.texts) == sorted(docs.texts), set(fit.texts) & set(evaluated.texts)
    (True, set())
    >>> check_disjoint(Documents(["a"], ["one"]), Documents(["x"], ["one"]))
    Traceback (most recent call last):
    ...
    qcompress.errors.InputError: 1 fit document is also evaluated (same id or same text), e.g. fit document "a" has the text of evaluated document "x": an inductive bench fits on documents disjoint from those it evaluates (remove the overlap, or pass --transductive)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from qcompress.defaults import PSEUDO_QUERY_KINDS
from qcompress.errors import InputError

__all__ = ["Documents", "Queries", "BenchData", "split_documents", "check_disjoint", "pseudo_query_set",
           "load_bench_data", "PSEUDO_QUERY_KINDS"]



@dataclass
class Documents:
    ids: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: Sequence[int]) -> "Documents":
        return Documents([self.ids[i] for i in rows], [self.texts[i] for i in rows])


@dataclass
class Queries:
    """A query set: texts, judgements over the evaluated documents (None: recall only), and for pseudo-queries
    the evaluated document each one came from (left out of its ranking)."""

    name: str
    ids: list[str]
    texts: list[str]
    qrels: dict[str, dict[str, int]] | None = None
    exclude: list[int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def judged(self) -> list[int]:
        """Rows of the queries with a positive judgement (scored for NDCG@10)."""
        if self.qrels is None:
            return []
        return [i for i, q in enumerate(self.ids) if any(g > 0 for g in self.qrels.get(q, {}).values())]


@dataclass
class BenchData:
    collection: str  # what the title calls the corpus
    fit: Documents
    evaluated: Documents
    transductive: bool
    queries: Queries | None = None  # given (judged) queries
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """The line every output carries."""
        if self.transductive:
            return f"transductive: fit on the {len(self.evaluated):,} evaluated documents themselves"
        return (f"inductive: fit on {len(self.fit):,} documents disjoint from the {len(self.evaluated):,} "
                "evaluated")


def split_documents(docs: Documents, fraction: float, seed: int) -> tuple[Documents, Documents]:
    """(fit, evaluated): a seeded random `fraction` of the distinct texts (and every document holding one) is fit
    on, the rest evaluated; both keep the corpus order."""
    if not 0 < fraction < 1:
        raise InputError(f"the fit fraction must be between 0 and 1 (exclusive), got {fraction}",
                         field="fit_fraction")
    distinct = list(dict.fromkeys(docs.texts))
    if len(distinct) < 2:
        raise InputError("the corpus has fewer than 2 distinct texts: nothing to split into fit and evaluated "
                         "documents (pass --transductive)")
    random.Random(seed).shuffle(distinct)
    size = min(len(distinct) - 1, max(1, round(fraction * len(distinct))))
    chosen = set(distinct[:size])
    fit_rows = [i for i, t in enumerate(docs.texts) if t in chosen]
    eval_rows = [i for i, t in enumerate(docs.texts) if t not in chosen]
    return docs.subset(fit_rows), docs.subset(eval_rows)


def check_disjoint(fit: Documents, evaluated: Documents) -> None:
    """InputError naming how many fit documents share an id or a text with an evaluated one, and one of them."""
    ids, texts = set(evaluated.ids), {t: i for i, t in zip(evaluated.ids, evaluated.texts)}
    shared = [(i, t) for i, t in zip(fit.ids, fit.texts) if i in ids or t in texts]
    if not shared:
        return
    doc_id, text = shared[0]
    example = (f'fit document "{doc_id}" is also an evaluated one' if doc_id in ids else
               f'fit document "{doc_id}" has the text of evaluated document "{texts[text]}"')
    count = f"{len(shared):,} fit document{'s are' if len(shared) > 1 else ' is'}"
    raise InputError(f"{count} also evaluated (same id or same text), e.g. {example}: an inductive bench fits on "
                     "documents disjoint from those it evaluates (remove the overlap, or pass --transductive)")


def pseudo_query_set(evaluated: Documents, count: int, kind: str, seed: int) -> Queries:
    """`count` evaluated documents drawn at random (seeded; all when fewer), as queries ("documents") or as a
    seeded span of 4-16 of their words ("spans"); each one's own document is left out of its ranking."""
    from qcompress.training.distill import pseudo_queries

    if kind not in PSEUDO_QUERY_KINDS:
        raise InputError(f"unknown pseudo-query kind {kind!r}; choose {' or '.join(PSEUDO_QUERY_KINDS)}")
    rows = sorted(random.Random(seed).sample(range(len(evaluated)), min(count, len(evaluated))))
    chosen = evaluated.subset(rows)
    return Queries("pseudo-queries", chosen.ids, pseudo_queries(chosen.texts, kind, seed), exclude=rows)


def _read_documents(source: str, split: str) -> Documents:
    """The non-empty documents of a collection name, a BEIR folder or a JSONL/TSV file of texts."""
    from qcompress.training.distill import read_corpus

    records = read_corpus(source, split)
    return Documents([i for i, _ in records], [t for _, t in records])


def _read_queries(files: Sequence[str], qrels_files: Sequence[str]) -> Queries:
    """Queries from JSONL/TSV files (ids unique across them), judgements from TREC or BEIR qrels files."""
    from qcompress.formats import read_qrels, read_texts

    texts: dict[str, str] = {}
    for path in files:
        for qid, text in read_texts(path):
            if qid in texts:
                raise InputError(f'query id "{qid}" is given twice (ids must be unique across --queries files)',
                                 file=path, field="id")
            texts[qid] = text
    qrels: dict[str, dict[str, int]] | None = {} if qrels_files else None
    for path in qrels_files:
        for qid, judged in read_qrels(path).items():
            merged = qrels.setdefault(qid, {})
            for doc, grade in judged.items():
                if merged.get(doc, grade) != grade:
                    raise InputError(f'query "{qid}", doc "{doc}" is judged {grade} here and {merged[doc]} in an '
                                     "earlier --qrels file; keep one judgement", file=path)
                merged[doc] = grade
    return Queries("queries", list(texts), list(texts.values()), qrels)


def _collection_queries(source: str, split: str) -> tuple[Documents, Queries]:
    from qcompress.data import load_collection

    collection = load_collection(source, split)
    records = [(i, t) for i, t in collection.corpus.items() if t.strip()]
    docs = Documents([i for i, _ in records], [t for _, t in records])
    return docs, Queries("queries", list(collection.queries), list(collection.queries.values()), collection.qrels)


def _judged_over(queries: Queries, fit: Documents, transductive: bool) -> tuple[Queries, list[str]]:
    """The queries with judgements of fit documents dropped (an inductive split cannot retrieve them)."""
    if queries.qrels is None:
        return queries, [f"{len(queries):,} queries without judgements: recall only"]
    notes = []
    qrels = {q: dict(queries.qrels.get(q, {})) for q in queries.ids}
    if not transductive:
        fit_ids = set(fit.ids)
        qrels = {q: {d: g for d, g in judged.items() if d not in fit_ids} for q, judged in qrels.items()}
    queries = Queries(queries.name, queries.ids, queries.texts, qrels)
    unjudged = len(queries) - len(queries.judged())
    if unjudged:
        notes.append(f"{unjudged:,} of {len(queries):,} queries have no positive judgement among the evaluated "
                     "documents: scored for recall, not for NDCG@10")
    return queries, notes


def load_bench_data(corpus: str, *, split: str = "test", queries: Sequence[str] = (), qrels: Sequence[str] = (),
                    fit_corpus: str | None = None, fit_fraction: float | None = None, transductive: bool = False,
                    seed: int = 0) -> BenchData:
    """The fit and evaluated documents and the given queries of a bench (module docstring)."""
    if qrels and not queries:
        raise InputError("judgements (--qrels) need their queries (--queries FILE)", field="qrels")
    if transductive and (fit_corpus is not None or fit_fraction is not None):
        raise InputError("--transductive fits on the evaluated documents themselves: drop --fit-corpus and "
                         "--fit-fraction", field="transductive")
    if fit_corpus is not None and fit_fraction is not None:
        raise InputError("give --fit-corpus or --fit-fraction, not both", field="fit_corpus")
    if queries or Path(corpus).is_file():
        docs, given = _read_documents(corpus, split), (_read_queries(queries, qrels) if queries else None)
    else:
        docs, given = _collection_queries(corpus, split)
    if transductive:
        fit, evaluated = docs, docs
    elif fit_corpus is not None:
        fit, evaluated = _read_documents(fit_corpus, split), docs
    else:
        fit, evaluated = split_documents(docs, 0.5 if fit_fraction is None else fit_fraction, seed)
    if not transductive:
        check_disjoint(fit, evaluated)
    notes: list[str] = []
    if given is not None:
        given, notes = _judged_over(given, fit, transductive)
    name = Path(corpus).name if Path(corpus).exists() else corpus
    return BenchData(name, fit, evaluated, transductive, given, notes)
