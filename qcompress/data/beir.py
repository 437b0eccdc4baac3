"""BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) and the collections bundled in this package."""

from __future__ import annotations

from pathlib import Path

from qcompress.data.collection import Collection
from qcompress.errors import InputError
from qcompress.formats import iter_qrels, iter_texts

__all__ = ["BUNDLED", "bundled_path", "load_beir_folder"]

BUNDLED = ("cranfield",)


def bundled_path(name: str) -> Path:
    """The folder of a collection shipped inside the package (BEIR layout).

    Example:
        >>> (bundled_path("cranfield") / "corpus.jsonl").is_file()
        True
    """
    if name not in BUNDLED:
        raise InputError(f"no bundled collection {name!r}; bundled: {', '.join(BUNDLED)}")
    # A plain path next to this module: the package is installed as files (also editable), never zipped.
    return Path(__file__).resolve().parent / name


def load_beir_folder(folder: Path, split: str, name: str) -> Collection:
    """The judged queries of `split` in a BEIR folder, with the whole corpus; `name` names the collection.

    Only queries with judgements in the split are kept, in the queries file's order. Judgements must name known
    queries and documents; grade-0 judgements are kept.

    Example:
        >>> c = load_beir_folder(bundled_path("cranfield"), "train", "cranfield")
        >>> c.split, len(c.queries), all(c.qrels[q] for q in c.queries)
        ('train', 113, True)
    """
    corpus_file, queries_file = folder / "corpus.jsonl", folder / "queries.jsonl"
    qrels_dir = folder / "qrels"
    qrels_file = qrels_dir / f"{split}.tsv"
    splits = sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    layout = "a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
    for required in (corpus_file, queries_file):
        if not required.is_file():
            raise InputError(f"missing {required.name}: {layout}", file=required)
    if not qrels_file.is_file():
        available = ", ".join(splits) if splits else "none (the qrels folder is missing or empty)"
        raise InputError(f"no judgements for split {split!r}; available splits: {available}", file=qrels_file)

    # Empty texts are allowed here: an empty document is still a document that can be retrieved (or not).
    corpus = dict(iter_texts(corpus_file, allow_empty=True))
    if not corpus:
        raise InputError("corpus is empty; it needs at least one document", file=corpus_file)
    all_queries = dict(iter_texts(queries_file, allow_empty=True))

    qrels: dict[str, dict[str, int]] = {}
    for qid, doc_id, grade, line in iter_qrels(qrels_file):
        if qid not in all_queries:
            raise InputError(
                f'query id "{qid}" is not in {queries_file.name}; judgements must name known queries',
                file=qrels_file,
                line=line,
                field="query-id",
            )
        if doc_id not in corpus:
            raise InputError(
                f'doc id "{doc_id}" is not in {corpus_file.name}; judgements must name known documents',
                file=qrels_file,
                line=line,
                field="corpus-id",
            )
        qrels.setdefault(qid, {})[doc_id] = grade
    if not qrels:
        raise InputError(f"split {split!r} has no judgements; the file holds no qrels lines", file=qrels_file)
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    qrels = {qid: qrels[qid] for qid in queries}  # queries-file order, for deterministic iteration
    return Collection(name=name, corpus=corpus, queries=queries, qrels=qrels, split=split)
