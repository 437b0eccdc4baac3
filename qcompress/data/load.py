"""`load_collection`: one entry point that picks the reader for a collection name."""

from __future__ import annotations

from pathlib import Path

from qcompress.data.beir import BUNDLED, bundled_path, load_beir_folder
from qcompress.data.collection import Collection
from qcompress.data.irds import DEFAULT_MAX_DOCPAIRS, load_ir_datasets
from qcompress.data.trecdl import TREC_DL, load_trec_dl

__all__ = ["load_collection"]


def load_collection(
    dataset: str | None = None,
    split: str = "test",
    *,
    max_docpairs: int | None = DEFAULT_MAX_DOCPAIRS,
    trec_dir: str | Path | None = None,
) -> Collection:
    """Load a collection: None or "cranfield" (bundled), a BEIR folder, a local TREC DL set, or an ir_datasets id.

    A BEIR folder holds corpus.jsonl (`_id`, `title`, `text`), queries.jsonl (`_id`, `text`) and
    qrels/<split>.tsv (header `query-id corpus-id score`). An ir_datasets id reads `ID/split` where ir_datasets
    has one ("beir/scifact" and "test": beir/scifact/test), else the id itself, which names its split (e.g.
    "msmarco-passage/trec-dl-2019/judged"). Hard negatives come from
    the dataset's docpairs (the second doc of each pair), reading at most `max_docpairs` pairs (None: all) on
    first use. Only queries with judgements in the split are kept. "trec-dl-2019", "trec-dl-2020" and
    "trec-dl-21" read the local TREC DL folder `trec_dir` (or $QCOMPRESS_TREC_DIR): see `qcompress.data.trecdl`.

    Example:
        >>> c = load_collection()
        >>> c.name, c.split, len(c.queries)
        ('cranfield', 'test', 112)
    """
    if dataset in TREC_DL:
        return load_trec_dl(dataset, trec_dir)
    if dataset is None or dataset in BUNDLED:
        name = dataset or "cranfield"
        return load_beir_folder(bundled_path(name), split, name)
    if Path(dataset).is_dir():
        return load_beir_folder(Path(dataset), split, dataset)
    return load_ir_datasets(dataset, max_docpairs, split)
