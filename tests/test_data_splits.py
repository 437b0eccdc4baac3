"""ir_datasets ids honour --split where ir_datasets has the split (beir/scifact + test -> beir/scifact/test), and
BEIR's ids are ranked against the whole corpus by default, as BEIR and MTEB report them. Offline: ir_datasets'
registry and a stand-in dataset, no download."""

from types import SimpleNamespace

import pytest

from qcompress.data import load_collection
from qcompress.data.irds import split_id
from qcompress.errors import InputError
from qcompress.evaluation import choose_protocol, default_protocol

ir_datasets = pytest.importorskip("ir_datasets")


def test_split_selects_the_sub_id_where_ir_datasets_has_one():
    assert split_id("beir/scifact", "test") == "beir/scifact/test"
    assert split_id("beir/scifact", "train") == "beir/scifact/train"
    assert split_id("msmarco-passage", "train") == "msmarco-passage/train"
    assert split_id("msmarco-passage/trec-dl-2019/judged", "test") == "msmarco-passage/trec-dl-2019/judged"
    assert split_id("beir/arguana", "test") == "beir/arguana"  # one split, named by the id itself


def test_the_train_help_example_names_a_collection_with_judgements():
    """`qcompress train ... --dataset beir/scifact` (split train by default) reads beir/scifact/train."""
    assert ir_datasets.load(split_id("beir/scifact", "train")).has_qrels()


def test_a_split_that_does_not_exist_lists_the_ones_that_do():
    with pytest.raises(InputError, match=r"'beir/scifact' has no judgements of its own and no split 'dev'; its "
                                         r"splits: test, train"):
        load_collection("beir/scifact", "dev")


def test_load_collection_reads_the_split_of_an_id(monkeypatch):
    loaded = []
    docs = [SimpleNamespace(doc_id="d1", title="", text="a wing"), SimpleNamespace(doc_id="d2", title="", text="heat")]
    fake = SimpleNamespace(
        has_docs=lambda: True, has_queries=lambda: True, has_qrels=lambda: True, has_docpairs=lambda: False,
        qrels_iter=lambda: iter([SimpleNamespace(query_id="q1", doc_id="d1", relevance=1)]),
        queries_iter=lambda: iter([SimpleNamespace(query_id="q1", text="wing")]),
        docs_iter=lambda: iter(docs),
    )
    real = ir_datasets.load
    monkeypatch.setattr(ir_datasets, "load", lambda i: loaded.append(i) or (fake if i.count("/") == 2 else real(i)))
    collection = load_collection("beir/scifact", "test")
    assert loaded == ["beir/scifact/test"] and collection.name == collection.split == "beir/scifact/test"
    assert dict(collection.corpus.items()) == {"d1": "a wing", "d2": "heat"}


def test_beir_ids_default_to_full_ranking():
    assert default_protocol("beir/scifact") == "full" and choose_protocol("beir/nfcorpus") == "full"
    assert default_protocol("msmarco-passage/trec-dl-2019/judged") == "judged"
