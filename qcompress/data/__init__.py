"""Collections for training and evaluation: the bundled Cranfield sample, BEIR folders, local TREC DL, ir_datasets.

`load_collection` returns a `Collection`: the corpus (doc id -> text), the queries of one split that have
judgements, their qrels, and the relevance level that RR/recall/MAP count as relevant. One module per source:
    collection.py   the Collection type and `positives`
    load.py         `load_collection`, which picks the reader for a name
    beir.py         BEIR folders and the bundled collections (cranfield/, beside this file)
    trecdl.py       the TREC DL names (local and ir_datasets) and the local TREC DL folder
    irds.py         ir_datasets ids: a lazy corpus and lazy hard negatives
"""

from qcompress.data.beir import BUNDLED, bundled_path
from qcompress.data.collection import Collection, positives
from qcompress.data.irds import DEFAULT_MAX_DOCPAIRS, DocpairNegatives, IRDatasetsCorpus
from qcompress.data.load import load_collection
from qcompress.data.trecdl import (
    EVALUATION_SETS, EVALUATION_YEARS, TREC_DIR_ENV, TREC_DL, load_trec_dl, trec_dir, trec_dl_dataset,
)

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
