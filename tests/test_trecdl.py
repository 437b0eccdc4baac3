"""The local TREC DL layout (issue 8), read from the shared data folder; MS MARCO text never enters the repo.

Tests copy a small slice of ../shared/data/trec-dl into tmp_path at run time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from qcompress.data import load_collection
from qcompress.data.trecdl import EVALUATION_SETS, EVALUATION_YEARS, TREC_DL, trec_dl_dataset
from qcompress.errors import InputError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "trec-dl"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/trec-dl is not beside the checkout")


def make_slice(folder: Path, year: str = "19", top: int = 5) -> Path:
    """All judged queries and qrels, the BM25 run cut to `top` per query, and only those passages' texts."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (f"queries.dl{year}.tsv", f"qrels.dl{year}-passage.txt"):
        (folder / name).write_bytes((SHARED / name).read_bytes())
    kept, lines = set(), []
    for line in (SHARED / f"run.bm25.dl{year}.trec").read_text().splitlines():
        qid, _, pid, rank, _, _ = line.split()
        if int(rank) <= top:
            kept.add(pid)
            lines.append(line)
    (folder / f"run.bm25.dl{year}.trec").write_text("\n".join(lines) + "\n")
    with open(SHARED / "collection.tsv", encoding="utf-8") as src:
        texts = [line for line in src if line.split("\t", 1)[0] in kept]
    (folder / "collection.tsv").write_text("".join(texts), encoding="utf-8")
    return folder


@needs_shared
def test_full_files_counts_and_bm25_numbers():
    for name, queries, bm25 in (("trec-dl-2019", 43, 0.5058), ("trec-dl-2020", 54, 0.4796)):
        c = load_collection(name, trec_dir=SHARED)
        assert len(c.queries) == queries and c.relevance_level == 2 and len(c.corpus) == 30005
        ndcg = pytrec_eval.RelevanceEvaluator(c.qrels, {"ndcg_cut.10"}).evaluate(c.first_stage)
        assert len(ndcg) == queries
        assert round(float(np.mean([v["ndcg_cut_10"] for v in ndcg.values()])), 4) == bm25


@needs_shared
def test_dl21_training_examples_have_text():
    c = load_collection("trec-dl-21", trec_dir=SHARED)
    assert len(c.queries) == 53
    assert all(d in c.corpus for q in c.qrels for d in c.qrels[q])
    assert sum(g >= 2 for q in c.qrels for g in c.qrels[q].values()) == 1864
    assert all(c.qrels[q][d] <= 0 for q, negs in c.hard_negatives.items() for d in negs)


@needs_shared
def test_env_variable_and_slice(tmp_path, monkeypatch):
    folder = make_slice(tmp_path / "dl", top=3)
    monkeypatch.setenv("QCOMPRESS_TREC_DIR", str(folder))
    c = load_collection("trec-dl-2019")
    assert len(c.corpus) <= 43 * 3 and all(len(r) == 3 for r in c.first_stage.values())


def test_missing_folder_and_files(tmp_path, monkeypatch):
    monkeypatch.delenv("QCOMPRESS_TREC_DIR", raising=False)
    with pytest.raises(InputError, match=r"name one \(trec_dir\) or set QCOMPRESS_TREC_DIR"):
        load_collection("trec-dl-2019")
    with pytest.raises(InputError, match="missing file collection.tsv"):
        load_collection("trec-dl-2019", trec_dir=tmp_path)


@needs_shared
def test_query_count_is_checked(tmp_path):
    folder = make_slice(tmp_path / "dl", top=1)
    queries = (folder / "queries.dl19.tsv").read_text().splitlines()
    (folder / "queries.dl19.tsv").write_text("\n".join(queries) + "\n")
    qrels = [l for l in (folder / "qrels.dl19-passage.txt").read_text().splitlines()
             if l.split()[0] != queries[0].split("\t")[0]]
    (folder / "qrels.dl19-passage.txt").write_text("\n".join(qrels) + "\n")
    with pytest.raises(InputError, match="expected 43 judged queries"):
        load_collection("trec-dl-2019", trec_dir=folder)


def test_evaluation_names_local_and_ir_datasets():
    assert [trec_dl_dataset(y, local=True) for y in EVALUATION_YEARS] == list(EVALUATION_SETS)
    assert all(name in TREC_DL for name in EVALUATION_SETS)
    assert trec_dl_dataset("2019", local=False) == "msmarco-passage/trec-dl-2019/judged"
    with pytest.raises(InputError, match="choose 2019 or 2020"):
        trec_dl_dataset("2021", local=False)
