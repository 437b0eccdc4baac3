"""Collections for training and evaluation: the bundled Cranfield sample, BEIR folders, local TREC DL, ir_datasets.

`load_collection` returns a `Collection`: the corpus (doc id -> text), the queries of one split that have
judgements, their qrels, and the relevance level that RR/recall/MAP count as relevant. One module per source:
    collection.py   the Collection type and `positives`
    load.py         `load_collection`, which picks the reader for a name
    beir.py         BEIR folders and the bundled collections (cranfield/, beside this file)
    trecdl.py       the TREC DL names (local and ir_datasets) and the local TREC DL folder
    irds.py         ir_datasets ids: a lazy corpus and lazy hard negatives
"""

from qcompress._lazy import attach

__all__ = [
    "Collection",
    "load_collection",
    "bundled_path",
    "positives",
    "IRDatasetsCorpus",
    "DocpairNegatives",
    "BUNDLED",
    "DEFAULT_MAX_DOCPAIRS",
    "load_trec_dl",
    "trec_dir",
    "TREC_DIR_ENV",
    "TREC_DL",
    "EVALUATION_SETS",
    "EVALUATION_YEARS",
    "trec_dl_dataset",
]

# Imported on first use (qcompress._lazy), like every package of qcompress.
__getattr__, __dir__ = attach(__name__, {
    "BUNDLED": "beir", "bundled_path": "beir",
    "Collection": "collection", "positives": "collection",
    "DEFAULT_MAX_DOCPAIRS": "irds", "DocpairNegatives": "irds", "IRDatasetsCorpus": "irds",
    "load_collection": "load",
    "EVALUATION_SETS": "trecdl", "EVALUATION_YEARS": "trecdl", "TREC_DIR_ENV": "trecdl", "TREC_DL": "trecdl",
    "load_trec_dl": "trecdl", "trec_dir": "trecdl", "trec_dl_dataset": "trecdl",
})
