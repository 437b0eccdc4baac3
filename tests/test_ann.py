"""The approximate index (issue 19): IVF candidates re-ranked by exact log-fidelity, `qcompress.search.approximate`."""

import math

import pytest
import torch

from qcompress.codes import AngleCodes
from qcompress.errors import InputError
from qcompress.formats import EmbeddingWriter
from qcompress.quantization import decode_codes
from qcompress.search import brute_force_topk
from qcompress.search.approximate import ApproximateIndex, build_index, recall_at_k

META = {"encoder": "x", "head": "none", "similarity": "fidelity"}


def clustered(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(max(1, n // 50), dim, generator=g) * math.pi
    members = torch.randint(0, len(centres), (n,), generator=g)
    return (centres[members] + 0.1 * torch.randn(n, dim, generator=g)).clamp(0, math.pi)


def write_index(tmp_path, corpus, encoding="float32", nlist=8):
    path = tmp_path / f"c-{encoding}.parquet"
    codec = AngleCodes.fit(corpus, 4) if encoding == "codes" else None
    with EmbeddingWriter(path, dim=corpus.shape[1], metadata=META, encoding=encoding, row_group_size=300,
                         codec=codec) as writer:
        writer.write([f"d{i}" for i in range(len(corpus))], corpus)
    info = build_index(path, tmp_path / f"c-{encoding}.index", nlist=nlist)
    assert (info.rows, info.nlist) == (len(corpus), nlist)
    return ApproximateIndex(tmp_path / f"c-{encoding}.index")


@pytest.mark.parametrize("encoding", ["float32", "uint8", "codes"])
def test_every_cell_probed_and_every_row_reranked_is_the_exact_search(tmp_path, encoding):
    corpus = clustered(1000, 12)
    index = write_index(tmp_path, corpus, encoding)
    stored = {"float32": corpus, "uint8": decode_codes(index.values)}.get(encoding)
    if encoding == "codes":  # 4-bit codes of 12 qubits: the index keeps them packed, 6 bytes a row
        assert index.values.shape == (1000, 6) and index.codec == AngleCodes.fit(corpus, 4)
        stored = index.codec.decode(index.values)
    queries = (corpus[:7] + 0.2).clamp(0, math.pi)
    scores, rows = index.search_rows(queries, 10, nprobe=8, rerank=1000)
    truth_scores, truth_rows = brute_force_topk(queries, stored, 10)
    assert torch.equal(rows, truth_rows) and torch.allclose(scores, truth_scores, atol=1e-5)
    exact_scores, exact_rows = index.exact_search(queries, 10, batch_rows=300)  # batches: the floor carried over
    assert torch.equal(exact_rows, truth_rows)
    assert recall_at_k(rows, exact_rows) == 1.0
    _, ids = index.search(queries, 3, nprobe=8, rerank=1000)
    assert ids == [[f"d{r}" for r in row] for row in truth_rows[:, :3].tolist()]


def test_few_cells_probed_give_exact_scores_of_what_they_find(tmp_path):
    corpus = clustered(2000, 16, seed=1)
    index = write_index(tmp_path, corpus, nlist=32)
    queries = corpus[100:110]
    scores, rows = index.search_rows(queries, 10, nprobe=4, rerank=50)
    from qcompress.quantum import log_cos2_half

    expected = log_cos2_half(queries[:, None, :] - corpus[rows]).sum(-1)
    assert torch.allclose(scores, expected, atol=1e-5)  # re-ranked by the reference formula
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    _, truth = index.exact_search(queries, 10)
    assert recall_at_k(rows, truth) >= 0.8  # near neighbours share the query's cell
    assert rows[:, 0].tolist() == list(range(100, 110))  # each query is a corpus row: found first


def test_k_above_the_candidates_and_rows(tmp_path):
    corpus = clustered(100, 4)
    index = write_index(tmp_path, corpus, nlist=4)
    scores, rows = index.search_rows(corpus[:2], 500, nprobe=1, rerank=5)
    assert rows.shape == (2, 100)
    found = scores > -math.inf
    assert found.sum(1).ge(5).all()  # at least the re-ranked candidates
    assert (rows[found] < 100).all()  # unfilled slots never point into the corpus... and rank last
    for name, value in (("nprobe", 0), ("rerank", -1)):
        with pytest.raises(ValueError, match=name):
            index.search(corpus[:1], 1, **{name: value})


def test_damaged_or_missing_indexes_are_input_errors(tmp_path):
    corpus = clustered(200, 4)
    index = write_index(tmp_path, corpus, nlist=4)
    with pytest.raises(InputError, match="not an index folder"):
        ApproximateIndex(tmp_path)
    (index.folder / "ivf.faiss").write_bytes(b"garbage")
    with pytest.raises(InputError, match="damaged index"):
        ApproximateIndex(index.folder)
    (index.folder / "index.json").write_text("{")
    with pytest.raises(InputError, match="unreadable index"):
        ApproximateIndex(index.folder)


def test_an_index_refuses_duplicate_ids_and_vectors(tmp_path):
    path = tmp_path / "dup.parquet"
    with EmbeddingWriter(path, dim=2, metadata=META) as writer:
        writer.write(["a", "b", "a"], torch.rand(3, 2))
    with pytest.raises(InputError, match='"a"'):
        build_index(path, tmp_path / "dup.index", nlist=1)
    assert not (tmp_path / "dup.index").exists()
    vectors = tmp_path / "v.parquet"
    with EmbeddingWriter(vectors, dim=2, metadata=dict(META, similarity="cosine"), column="vectors") as writer:
        writer.write(["a"], torch.rand(1, 2))
    with pytest.raises(InputError, match="cosine vectors"):
        build_index(vectors, tmp_path / "v.index")


@pytest.mark.parametrize("factory, nlist, kind", [("IVF{nlist},Flat", 8, "IndexIVFFlat"), ("HNSW16", None, "IndexHNSWFlat")])
def test_index_factory_layouts_searched_wide_are_the_exact_search(tmp_path, factory, nlist, kind):
    """`build_index(factory=...)` (`index build --factory`): another faiss layout, the same exact re-ranking."""
    import faiss

    corpus = clustered(600, 12, seed=2)
    path = tmp_path / "c.parquet"
    with EmbeddingWriter(path, dim=12, metadata=META, row_group_size=250) as writer:
        writer.write([f"d{i}" for i in range(len(corpus))], corpus)
    info = build_index(path, tmp_path / "c.index", nlist=nlist, factory=factory)
    assert (info.nlist, info.factory) == (nlist, factory.replace("{nlist}", str(nlist)))
    index = ApproximateIndex(tmp_path / "c.index")
    assert type(faiss.downcast_index(index.ivf)).__name__ == kind and index.factory == info.factory
    queries = (corpus[:5] + 0.1).clamp(0, math.pi)
    scores, rows = index.search_rows(queries, 10, nprobe=600, rerank=600)  # every cell / a 600-wide graph search
    truth_scores, truth_rows = brute_force_topk(queries, corpus, 10)
    assert torch.equal(rows, truth_rows) and torch.allclose(scores, truth_scores, atol=1e-5)


def test_index_factory_strings_faiss_rejects_are_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from qcompress.cli import app

    corpus = clustered(300, 6)
    path = tmp_path / "c.parquet"
    with EmbeddingWriter(path, dim=6, metadata=META) as writer:
        writer.write([f"d{i}" for i in range(len(corpus))], corpus)
    for factory, message in [("Nonsense{nlist}", "faiss rejects the index factory string 'Nonsense"),
                             ("IVF{nlist},PQ5", "should be a multiple of the number of subquantizers"),
                             ("HNSW8", "nlist goes into a factory string's {nlist}, and 'HNSW8' has none")]:
        result = CliRunner().invoke(app, ["index", "build", str(path), "-o", str(tmp_path / "x.index"), "--factory",
                                          factory, "--nlist", "4"])
        assert result.exit_code == 1 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and not (tmp_path / "x.index").exists()


def test_top_k_above_the_candidates_found_gives_a_shorter_ranking(tmp_path):
    """Issue 27 item 4: `score --index` with --top-k above the candidates of the probed cells was an
    ArrowIndexError traceback; each query now gets the candidates found, best first."""
    corpus = clustered(100, 4)
    index = write_index(tmp_path, corpus, nlist=4)
    scores, ids = index.search(corpus[:2], 500, nprobe=1, rerank=5)
    _, rows = index.search_rows(corpus[:2], 500, nprobe=1, rerank=5)
    for row_ids, row_rows in zip(ids, rows.tolist()):
        assert 5 <= len(row_ids) < 100
        assert row_ids == [f"d{r}" for r in row_rows[: len(row_ids)]] and all(r >= 100 for r in row_rows[len(row_ids):])


def _rewrite_corpus(path, corpus):
    with EmbeddingWriter(path, dim=corpus.shape[1], metadata=META, row_group_size=300) as writer:
        writer.write([f"d{i}" for i in range(len(corpus))], corpus)


def test_a_stale_index_is_refused_and_a_deleted_corpus_is_not_needed(tmp_path):
    """Issue 27 item 5: after the corpus is recompressed from other documents the index returned the old ids."""
    corpus = clustered(300, 4)
    index = write_index(tmp_path, corpus, nlist=4)
    source = tmp_path / "c-float32.parquet"
    before = index.search(corpus[:3], 5, nprobe=4)
    _rewrite_corpus(source, clustered(300, 4, seed=5))  # same ids and size, other documents
    with pytest.raises(InputError, match=r"c-float32\.index: was built from .*c-float32\.parquet as it was then "
                                         r"\(300 rows, footer digest \w+\); it now differs \(300 rows, footer digest \w+\)"):
        ApproximateIndex(index.folder)
    _rewrite_corpus(source, clustered(301, 4, seed=5))
    with pytest.raises(InputError, match=r"\(301 rows"):
        ApproximateIndex(index.folder)
    source.unlink()  # gone: the index holds the ids and values it searches
    again = ApproximateIndex(index.folder).search(corpus[:3], 5, nprobe=4)
    assert again[1] == before[1] and torch.equal(again[0], before[0])


def test_a_damaged_or_incomplete_index_description_is_one_input_error(tmp_path):
    """Issue 27 items 5 and 9: an index.json without `metadata` or `dim` was a KeyError; duplicate ids written into
    ids.arrow collapsed silently."""
    import json

    import pyarrow as pa

    corpus = clustered(200, 4)
    index = write_index(tmp_path, corpus, nlist=4)
    info_file = index.folder / "index.json"
    info = json.loads(info_file.read_text())
    for broken, field in ((dict(info, metadata=None), "metadata"), ({k: v for k, v in info.items() if k != "rows"}, "rows"),
                          (dict(info, metadata={k: v for k, v in info["metadata"].items() if k != "dim"}), "dim"),
                          (dict(info, nlist="many"), "nlist"), (dict(info, nlist=0), "nlist"), ([1, 2], "format")):
        info_file.write_text(json.dumps(broken))
        with pytest.raises(InputError, match=rf'index\.json: field "{field}"'):
            ApproximateIndex(index.folder)
    info_file.write_text(json.dumps(info))
    ids = [f"d{i}" for i in range(200)]
    ids[7] = "d8"  # a duplicate, written by hand into the index
    schema = pa.schema([pa.field("id", pa.string(), nullable=False)])
    with pa.OSFile(str(index.folder / "ids.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(pa.record_batch([pa.array(ids)], schema=schema))
    with pytest.raises(InputError, match="damaged index: ids.arrow is not the file `qcompress index build` wrote"):
        ApproximateIndex(index.folder)
