"""Collections: the bundled Cranfield, BEIR folders (and their errors), ir_datasets ids (offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import namedtuple
from pathlib import Path

import pytest

from qcompress.data import Collection, bundled_path, irds, load_collection, positives
from qcompress.errors import InputError


def test_bundled_cranfield_splits(cranfield_dir):
    assert bundled_path("cranfield") == cranfield_dir.resolve()
    test = load_collection()
    assert isinstance(test, Collection)
    assert (test.name, test.split, test.relevance_level, test.hard_negatives) == ("cranfield", "test", 1, None)
    assert len(test.corpus) == 1398 and len(test.queries) == 112 and set(test.qrels) == set(test.queries)
    train = load_collection("cranfield", split="train")
    assert len(train.corpus) == 1398 and len(train.queries) == 113
    assert not set(train.queries) & set(test.queries)
    assert all(train.qrels[q] for q in train.queries)
    # BEIR's rule: the title goes in front of the text.
    first = json.loads((cranfield_dir / "corpus.jsonl").read_text().splitlines()[0])
    assert test.corpus[first["_id"]] == (first["title"] + " " + first["text"]).strip()
    with pytest.raises(InputError, match="bundled: cranfield"):
        bundled_path("trec")


def test_positives():
    judged = {"a": 0, "b": 3, "c": 1, "d": -1, "e": 2}
    assert positives(judged) == ["b", "c", "e"]
    assert positives(judged, 2) == ["b", "e"]
    assert positives({"a": 0}) == []


# -- BEIR folders ----------------------------------------------------------------------------------------------

CORPUS = [
    {"_id": "d1", "title": "Lift", "text": "Wings make lift."},
    {"_id": "d2", "title": "", "text": "Drag slows planes."},
    {"_id": "d3", "text": "Heat transfer in boundary layers."},
]
QUERIES = [{"_id": "q1", "text": "what makes lift"}, {"_id": "q2", "text": "drag"}, {"_id": "q3", "text": "unjudged"}]


def beir_folder(root: Path, *, corpus=CORPUS, queries=QUERIES, qrels: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if corpus is not None:
        (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    if queries is not None:
        (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    if qrels is None:
        qrels = {"test": "q1\td1\t2\nq1\td2\t0\nq2\td2\t1\n", "train": "q3\td3\t1\n"}
    (root / "qrels").mkdir(exist_ok=True)
    for split, body in qrels.items():
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + body)
    return root


def test_beir_folder(tmp_path):
    folder = beir_folder(tmp_path / "mini")
    c = load_collection(str(folder))
    assert c.name == str(folder) and c.split == "test" and c.relevance_level == 1
    assert dict(c.corpus) == {
        "d1": "Lift Wings make lift.",
        "d2": "Drag slows planes.",
        "d3": "Heat transfer in boundary layers.",
    }
    assert c.queries == {"q1": "what makes lift", "q2": "drag"}  # only judged queries of this split
    assert c.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d2": 1}}  # grade-0 judgements are kept
    assert load_collection(str(folder), split="train").queries == {"q3": "unjudged"}


def expect_error(folder: Path, split: str = "test") -> InputError:
    with pytest.raises(InputError) as err:
        load_collection(str(folder), split=split)
    return err.value


def test_beir_missing_files(tmp_path):
    err = expect_error(beir_folder(tmp_path / "a", corpus=None))
    assert err.file == tmp_path / "a" / "corpus.jsonl" and "corpus.jsonl, queries.jsonl" in str(err)
    err = expect_error(beir_folder(tmp_path / "b", queries=None))
    assert err.file == tmp_path / "b" / "queries.jsonl" and "missing queries.jsonl" in str(err)
    err = expect_error(beir_folder(tmp_path / "c"), split="dev")
    assert err.file == tmp_path / "c" / "qrels" / "dev.tsv"
    assert "split 'dev'" in str(err) and "available splits: test, train" in str(err)


def test_beir_malformed_and_empty(tmp_path):
    folder = beir_folder(tmp_path / "a")
    with (folder / "corpus.jsonl").open("a") as f:
        f.write('{"_id": "d4", "text": \n')
    err = expect_error(folder)
    assert (str(err.file), err.line) == (str(folder / "corpus.jsonl"), 4) and "malformed JSON" in str(err)

    err = expect_error(beir_folder(tmp_path / "b", corpus=[]))
    assert err.file == tmp_path / "b" / "corpus.jsonl" and "corpus is empty" in str(err)

    err = expect_error(beir_folder(tmp_path / "c", qrels={"test": ""}))
    assert err.file == tmp_path / "c" / "qrels" / "test.tsv" and "no judgements" in str(err)

    folder = beir_folder(tmp_path / "d", qrels={"test": "q1\td1\n"})
    err = expect_error(folder)
    assert (str(err.file), err.line) == (str(folder / "qrels" / "test.tsv"), 2) and "expected 3" in str(err)

    err = expect_error(beir_folder(tmp_path / "e", corpus=CORPUS + [{"_id": "d1", "text": "again"}]))
    assert (err.line, err.field) == (4, "id") and 'duplicate id "d1" (first on line 1)' in str(err)


def test_beir_unknown_ids_in_qrels(tmp_path):
    folder = beir_folder(tmp_path / "a", qrels={"test": "q1\td1\t1\nq9\td1\t1\n"})
    err = expect_error(folder)
    assert (err.file, err.line, err.field) == (folder / "qrels" / "test.tsv", 3, "query-id")
    assert 'query id "q9" is not in queries.jsonl' in str(err)
    folder = beir_folder(tmp_path / "b", qrels={"test": "q1\td1\t1\nq1\td9\t1\n"})
    err = expect_error(folder)
    assert (err.line, err.field) == (3, "corpus-id") and 'doc id "d9" is not in corpus.jsonl' in str(err)


# -- ir_datasets -----------------------------------------------------------------------------------------------

IR_DATASETS_SCRIPT = textwrap.dedent(
    """
    import json
    from qcompress.data import load_collection
    from qcompress.errors import InputError

    c = load_collection("msmarco-passage/trec-dl-2019/judged", split="ignored")
    out = {
        "type": type(c.corpus).__name__, "p1": c.corpus["1"], "has_9": "9" in c.corpus, "len": len(c.corpus),
        "get_many": c.corpus.get_many(["0", "2", "9"]), "items": [list(kv) for kv in c.corpus.items()],
        "keys": list(c.corpus), "queries": c.queries, "qrels": c.qrels, "level": c.relevance_level,
        "split": c.split, "negatives": c.hard_negatives,
    }
    try:
        load_collection("no-such-dataset/anywhere")
    except InputError as err:
        out["unknown"] = str(err)
    print(json.dumps(out))
    """
)


def test_ir_datasets_trec_dl_2019_offline(tmp_path):
    """msmarco-passage/trec-dl-2019/judged through the real ir_datasets, from tiny files in its cache layout.

    ir_datasets reads cached files without checking their hashes. It fixes its home folder when it is first
    imported, so this runs in a fresh interpreter with IR_DATASETS_HOME pointing at the stand-ins.
    """
    home = tmp_path / "irds"
    base = home / "msmarco-passage"
    (base / "trec-dl-2019").mkdir(parents=True)
    (base / "irds_version.txt").write_text("v2")  # else ir_datasets "migrates" (deletes) collection.tsv
    (base / "collection.tsv").write_text("0\tcats purr\n1\tdogs bark\n2\tbirds sing\n")
    (base / "trec-dl-2019" / "queries.tsv").write_text("100\twhat do cats do\n200\tunjudged query\n300\tbirds\n")
    (base / "trec-dl-2019" / "qrels").write_text("100 Q0 0 3\n100 Q0 1 0\n300 Q0 2 2\n")
    env = dict(
        os.environ,
        IR_DATASETS_HOME=str(home),
        IR_DATASETS_TMP=str(tmp_path / "irds-tmp"),
        IR_DATASETS_DL_TRIES="1",  # should a future layout need a download, fail fast instead of hanging
        IR_DATASETS_DL_TIMEOUT="2",
    )
    result = subprocess.run(
        [sys.executable, "-c", IR_DATASETS_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["type"] == "IRDatasetsCorpus" and out["len"] == 3
    assert out["p1"] == "dogs bark" and out["has_9"] is False
    assert out["get_many"] == {"0": "cats purr", "2": "birds sing"}
    assert out["items"] == [["0", "cats purr"], ["1", "dogs bark"], ["2", "birds sing"]]
    assert out["keys"] == ["0", "1", "2"]
    assert out["queries"] == {"100": "what do cats do", "300": "birds"}
    assert out["qrels"] == {"100": {"0": 3, "1": 0}, "300": {"2": 2}}
    assert out["level"] == 2 and out["split"] == "msmarco-passage/trec-dl-2019/judged"
    assert out["negatives"] is None
    assert "not a folder, not 'cranfield', and ir_datasets does not know it" in out["unknown"]
    assert "no-such-dataset/anywhere" in out["unknown"]


Doc = namedtuple("Doc", "doc_id title text")
Query = namedtuple("Query", "query_id text")
Qrel = namedtuple("Qrel", "query_id doc_id relevance iteration")
DocPair = namedtuple("DocPair", "query_id doc_id_a doc_id_b")


class FakeStore:
    def __init__(self, docs):
        self.docs = {d.doc_id: d for d in docs}

    def get(self, doc_id):
        if doc_id not in self.docs:
            raise KeyError(f"doc_id={doc_id} not found")
        return self.docs[doc_id]

    def get_many(self, doc_ids):
        return {i: self.docs[i] for i in doc_ids if i in self.docs}


class FakeDataset:
    """The part of an ir_datasets dataset that load_collection uses."""

    def __init__(self, docpairs=(), fail=False):
        self.docs = [Doc("a", "Title", "body a"), Doc("b", "", "body b"), Doc("c", "T", "body c")]
        self.docpairs, self.fail = list(docpairs), fail
        self.docpairs_reads = 0

    def queries_iter(self):
        if self.fail:
            raise RuntimeError("All download sources failed")
        return iter([Query("1", "first"), Query("2", "second"), Query("3", "unjudged")])

    def qrels_iter(self):
        return iter([Qrel("1", "a", 1, "0"), Qrel("1", "b", 0, "0"), Qrel("2", "c", 1, "0"), Qrel("9", "a", 1, "0")])

    def docs_store(self):
        return FakeStore(self.docs)

    def docs_iter(self):
        return iter(self.docs)

    def docs_count(self):
        return len(self.docs)

    def has_docpairs(self):
        return bool(self.docpairs)

    def docpairs_iter(self):
        self.docpairs_reads += 1
        return iter(self.docpairs)


def test_ir_datasets_docpairs_become_lazy_hard_negatives(monkeypatch):
    pairs = [
        DocPair("1", "a", "c"),
        DocPair("1", "a", "c"),  # repeated: kept once
        DocPair("1", "a", "b"),  # judged 0: still a negative
        DocPair("2", "c", "a"),
        DocPair("7", "a", "b"),  # not a judged query
        DocPair("2", "c", "b"),  # beyond max_docpairs
    ]
    fake = FakeDataset(pairs)
    monkeypatch.setattr(irds, "_ir_datasets_load", lambda dataset_id: fake)
    c = load_collection("msmarco-passage/train/judged", split="ignored", max_docpairs=5)
    assert c.relevance_level == 1 and c.split == "msmarco-passage/train/judged"
    assert c.queries == {"1": "first", "2": "second"}  # judged queries only, qrels of unknown queries dropped
    assert c.qrels == {"1": {"a": 1, "b": 0}, "2": {"c": 1}}
    assert c.corpus["a"] == "Title body a" and c.corpus["b"] == "body b" and len(c.corpus) == 3
    assert fake.docpairs_reads == 0  # nothing read until the negatives are used
    assert dict(c.hard_negatives) == {"1": ["c", "b"], "2": ["a"]}
    assert c.hard_negatives.get("3") is None
    assert fake.docpairs_reads == 1

    fake = FakeDataset([DocPair("1", "b", "a")])  # the "negative" is judged relevant: dropped
    monkeypatch.setattr(irds, "_ir_datasets_load", lambda dataset_id: fake)
    assert dict(load_collection("some/dataset").hard_negatives) == {}


def test_ir_datasets_download_failure(monkeypatch):
    monkeypatch.setattr(irds, "_ir_datasets_load", lambda dataset_id: FakeDataset(fail=True))
    with pytest.raises(InputError) as err:
        load_collection("msmarco-passage/trec-dl-2020/judged")
    message = str(err.value)
    assert "'msmarco-passage/trec-dl-2020/judged'" in message and "could not be downloaded" in message
    assert "All download sources failed" in message
