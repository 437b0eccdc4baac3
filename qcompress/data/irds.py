"""Collections named by an ir_datasets id (e.g. msmarco-passage/trec-dl-2019/judged), read through ir_datasets.

The corpus is a lazy mapping backed by ir_datasets' docstore: MS MARCO has 8.8M passages, which must never be
loaded into a dict. Hard negatives (from the dataset's docpairs) are read on first use. ir_datasets is optional
(and may download on first use): it is imported only when an id is loaded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from typing import Any, Iterable

from qcompress.data.collection import Collection
from qcompress.data.trecdl import IR_DATASETS_PREFIXES, RELEVANCE_LEVEL
from qcompress.errors import InputError, require

__all__ = ["DEFAULT_MAX_DOCPAIRS", "IRDatasetsCorpus", "DocpairNegatives", "load_ir_datasets", "split_id"]

DEFAULT_MAX_DOCPAIRS = 1_000_000


class _QuietFailedDownloads(logging.Filter):
    """Drops ir_datasets' log lines about each failed download attempt: when every source fails, the InputError
    says why in one line (offline, six such lines came before it); when a retry succeeds, they were noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("download error", "Download failed"))


_QUIET = _QuietFailedDownloads()


def _import_ir_datasets(dataset_id: str) -> Any:
    ir_datasets = require("ir_datasets", f"{dataset_id!r} is not a folder and not 'cranfield': looking it up")
    logging.getLogger("ir_datasets").addFilter(_QUIET)  # its one logger; adding the same filter twice is a no-op
    return ir_datasets


def split_id(dataset_id: str, split: str | None) -> str:
    """The ir_datasets id of `split` of `dataset_id`: `dataset_id/split` where ir_datasets registers one (BEIR and
    MS MARCO ids name their splits so), else `dataset_id` itself, which then names its split.

    Example:
        >>> split_id("beir/scifact", "test"), split_id("msmarco-passage/trec-dl-2019/judged", "test")
        ('beir/scifact/test', 'msmarco-passage/trec-dl-2019/judged')
    """
    registered = set(_import_ir_datasets(dataset_id).registry)
    child = f"{dataset_id}/{split}"
    return child if split and child in registered else dataset_id


def _splits(ir_datasets: Any, dataset_id: str) -> list[str]:
    return sorted(i[len(dataset_id) + 1:] for i in ir_datasets.registry if i.startswith(dataset_id + "/"))


def _ir_datasets_load(dataset_id: str) -> Any:
    """`ir_datasets.load`, with its errors turned into InputError."""
    ir_datasets = _import_ir_datasets(dataset_id)
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise InputError(
            f"{dataset_id!r} is not a folder, not 'cranfield', and ir_datasets does not know it; pass a BEIR "
            "folder, 'cranfield', or an ir_datasets id such as msmarco-passage/trec-dl-2019/judged "
            "(see https://ir-datasets.com)"
        ) from None


def _download_error(dataset_id: str, err: BaseException) -> InputError:
    return InputError(
        f"ir_datasets dataset {dataset_id!r}: the data could not be downloaded or read ({_cause(err)}). Check the "
        "network connection, or place the files in ir_datasets' cache folder ($IR_DATASETS_HOME, default "
        "~/.ir_datasets)"
    )


def _cause(err: BaseException, limit: int = 200) -> str:
    """What went wrong, short enough for one line: ir_datasets' "All download sources failed" carries every
    source's full exception (a line of 1,500 characters offline).

    Example:
        >>> _cause(RuntimeError("All download sources failed", "... Failed to resolve 'trec.nist.gov' ([Errno -2]"))
        "no network: could not resolve 'trec.nist.gov'"
        >>> _cause(RuntimeError(("failed", [ConnectionError("Failed to resolve 'mirror.ir-datasets.com'")])))
        "no network: could not resolve 'mirror.ir-datasets.com'"
        >>> _cause(OSError("disk full"))
        'OSError: disk full'
    """
    text = " ".join(f"{type(err).__name__}: {err}".split())
    host = re.search(r"Failed to resolve \\?'([^'\\]+)", text)  # also inside a repr (quotes escaped)
    if host:
        return f"no network: could not resolve {host[1]!r}"
    return text if len(text) <= limit else text[:limit] + "..."


def _has(dataset: Any, kind: str) -> bool:
    check = getattr(dataset, f"has_{kind}", None)
    return True if check is None else bool(check())


def _doc_text(doc: Any) -> str:
    text = getattr(doc, "text", None)
    if isinstance(text, str):
        title = getattr(doc, "title", None)
        return (title + " " + text).strip() if isinstance(title, str) and title else text.strip()
    # Documents without a `text` field (e.g. `body` or `abstract`): ir_datasets knows their main text.
    return str(doc.default_text()).strip()


def _query_text(query: Any) -> str:
    text = getattr(query, "text", None)
    return text.strip() if isinstance(text, str) else str(query.default_text()).strip()


def load_ir_datasets(
    dataset_id: str, max_docpairs: int | None = DEFAULT_MAX_DOCPAIRS, split: str | None = None
) -> Collection:
    """The judged queries of an ir_datasets id with a lazy corpus: of `split_id(dataset_id, split)`, so
    ("beir/scifact", "test") reads beir/scifact/test, while an id that names its split is read as it is.

    Hard negatives come from the dataset's docpairs (the second doc of each pair), reading at most `max_docpairs`
    pairs (None: all) on first use. TREC DL passage ids count grades >= 2 as relevant.
    """
    asked, dataset_id = dataset_id, split_id(dataset_id, split)
    dataset = _ir_datasets_load(dataset_id)
    splits = _splits(_import_ir_datasets(asked), asked) if not _has(dataset, "qrels") else []
    if splits:
        raise InputError(f"ir_datasets dataset {asked!r} has no judgements of its own and no split {split!r}; its "
                         f"splits: {', '.join(splits)}", field="split")
    for kind in ("docs", "queries", "qrels"):
        if not _has(dataset, kind):
            raise InputError(
                f"ir_datasets dataset {dataset_id!r} has no {kind}; choose an id with documents, queries and "
                "judgements (e.g. msmarco-passage/trec-dl-2019/judged)"
            )
    try:
        qrels: dict[str, dict[str, int]] = {}
        for qrel in dataset.qrels_iter():
            qrels.setdefault(str(qrel.query_id), {})[str(qrel.doc_id)] = int(qrel.relevance)
        queries = {
            str(q.query_id): _query_text(q) for q in dataset.queries_iter() if str(q.query_id) in qrels
        }
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - downloads fail in many ways (DNS, HTTP, checksum, disk)
        raise _download_error(dataset_id, err) from err
    if not queries:
        raise InputError(f"ir_datasets dataset {dataset_id!r} has no judged queries; choose a split with judgements")
    qrels = {qid: qrels[qid] for qid in queries}
    level = RELEVANCE_LEVEL if dataset_id.startswith(IR_DATASETS_PREFIXES) else 1
    negatives = DocpairNegatives(dataset, dataset_id, qrels, max_docpairs) if _has(dataset, "docpairs") else None
    return Collection(
        name=dataset_id,
        corpus=IRDatasetsCorpus(dataset, dataset_id),
        queries=queries,
        qrels=qrels,
        split=dataset_id,
        relevance_level=level,
        hard_negatives=negatives,
    )


class IRDatasetsCorpus(Mapping):
    """doc id -> text, read lazily from an ir_datasets docstore (never loads the corpus into memory).

    `corpus[doc_id]` and `get_many(ids)` look documents up; iterating (`iter`, `items()`, `values()`) streams
    `docs_iter` once, in the dataset's order. The first lookup may download and index the corpus.
    """

    def __init__(self, dataset: Any, dataset_id: str) -> None:
        self._dataset, self.dataset_id = dataset, dataset_id
        self._store: Any = None

    def _docstore(self) -> Any:
        if self._store is None:
            try:
                self._store = self._dataset.docs_store()
            except Exception as err:  # noqa: BLE001
                raise _download_error(self.dataset_id, err) from err
        return self._store

    def __getitem__(self, doc_id: str) -> str:
        store = self._docstore()
        try:
            doc = store.get(doc_id)
        except KeyError:
            raise KeyError(doc_id) from None
        except Exception as err:  # noqa: BLE001
            raise _download_error(self.dataset_id, err) from err
        return _doc_text(doc)

    def get_many(self, doc_ids: Iterable[str]) -> dict[str, str]:
        """{doc id: text} for the ids that exist, in one docstore call (much faster than one lookup each)."""
        store = self._docstore()
        try:
            found = store.get_many(list(doc_ids))
        except Exception as err:  # noqa: BLE001
            raise _download_error(self.dataset_id, err) from err
        return {doc_id: _doc_text(doc) for doc_id, doc in found.items()}

    def iter_docs(self) -> Iterator[tuple[str, str]]:
        """(doc id, text) for every document, streamed in the dataset's order."""
        try:
            for doc in self._dataset.docs_iter():
                yield str(doc.doc_id), _doc_text(doc)
        except Exception as err:  # noqa: BLE001
            raise _download_error(self.dataset_id, err) from err

    def __iter__(self) -> Iterator[str]:
        return (doc_id for doc_id, _ in self.iter_docs())

    def __len__(self) -> int:
        try:
            # A built docstore knows the exact count; before that ir_datasets may answer with the published size
            # (a hint), or None for TSV-backed corpora, where counting means building the docstore.
            store = self._docstore()
            built = getattr(store, "built", None)
            if built is not None and built():
                return int(store.count())
            count = self._dataset.docs_count()
            return int(count) if count is not None else int(store.count())
        except Exception as err:  # noqa: BLE001
            raise _download_error(self.dataset_id, err) from err

    def items(self) -> ItemsView:
        return _StreamedItems(self)

    def values(self) -> ValuesView:
        return _StreamedValues(self)

    def __repr__(self) -> str:
        return f"IRDatasetsCorpus({self.dataset_id!r})"


class _StreamedItems(ItemsView):
    def __iter__(self):
        return self._mapping.iter_docs()


class _StreamedValues(ValuesView):
    def __iter__(self):
        return (text for _, text in self._mapping.iter_docs())


class DocpairNegatives(Mapping):
    """qid -> hard negative doc ids, from the dataset's docpairs (query_id, doc_id_a, doc_id_b): doc_id_b is the
    negative. Read on first use, at most `max_docpairs` pairs (None: all; MS MARCO train has ~400M), keeping
    only judged queries, dropping negatives that are judged relevant, and removing repeats (first seen first).

    Example (a stand-in for an ir_datasets dataset: only `docpairs_iter` is used):
        >>> from types import SimpleNamespace as Pair
        >>> pairs = [Pair(query_id="q1", doc_id_a="d1", doc_id_b=d) for d in ("d3", "d1", "d3", "d2")]
        >>> dataset = Pair(docpairs_iter=lambda: iter(pairs))
        >>> dict(DocpairNegatives(dataset, "some/id", {"q1": {"d1": 1, "d2": 0}}, max_docpairs=None))
        {'q1': ['d3', 'd2']}
    """

    def __init__(
        self, dataset: Any, dataset_id: str, qrels: Mapping[str, Mapping[str, int]], max_docpairs: int | None
    ) -> None:
        if max_docpairs is not None and max_docpairs < 0:
            raise InputError(f"max_docpairs must be >= 0 or None, got {max_docpairs}")
        self._dataset, self.dataset_id, self._qrels = dataset, dataset_id, qrels
        self.max_docpairs = max_docpairs
        self._negatives: dict[str, list[str]] | None = None

    def _load(self) -> dict[str, list[str]]:
        if self._negatives is None:
            found: dict[str, dict[str, None]] = {}
            try:
                for count, pair in enumerate(self._dataset.docpairs_iter()):
                    if self.max_docpairs is not None and count >= self.max_docpairs:
                        break
                    qid, negative = str(pair.query_id), str(pair.doc_id_b)
                    judged = self._qrels.get(qid)
                    if judged is None or judged.get(negative, 0) > 0:
                        continue
                    found.setdefault(qid, {})[negative] = None
            except Exception as err:  # noqa: BLE001
                raise _download_error(self.dataset_id, err) from err
            self._negatives = {qid: list(docs) for qid, docs in found.items()}
        return self._negatives

    def __getitem__(self, qid: str) -> list[str]:
        return self._load()[qid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __repr__(self) -> str:
        state = "not read yet" if self._negatives is None else f"{len(self._negatives)} queries"
        return f"DocpairNegatives({self.dataset_id!r}, max_docpairs={self.max_docpairs}, {state})"
