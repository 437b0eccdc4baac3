"""`qcompress export --features` and `score --candidates` (issue 28): a vector database's top 100 by inner product
over the features, re-ranked exactly by qcompress, equals the exact top 10 (LanceDB embedded and DuckDB, offline)."""

from __future__ import annotations

import math

import duckdb
import lancedb
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from qcompress.cli import app
from qcompress.codes import AngleCodes
from qcompress.export import log_fidelity_bound
from qcompress.formats import EmbeddingWriter, read_embeddings, read_run, write_run
from qcompress.quantum import pairwise_log_fidelity

runner = CliRunner()
META = {"encoder": "x", "head": "quantum", "similarity": "fidelity", "model_id": "m1"}


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def clustered(n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(max(1, n // 40), dim, generator=g) * math.pi
    return (centres[torch.randint(0, len(centres), (n,), generator=g)] + 0.3 * torch.randn(n, dim, generator=g)
            ).clamp(0, math.pi)


def write(path, values, encoding="float32", role="document"):
    codec = AngleCodes.fit(values, 4) if encoding == "codes" else None
    with EmbeddingWriter(path, dim=values.shape[1], metadata=dict(META, role=role), encoding=encoding, codec=codec,
                         row_group_size=700) as writer:
        writer.write([f"{role[0]}{i}" for i in range(len(values))], values)
    return path


@pytest.mark.parametrize("encoding", ["float32", "codes"])
def test_lancedb_top100_by_inner_product_reranked_is_the_exact_top10(tmp_path, encoding):
    corpus = write(tmp_path / "corpus.parquet", clustered(3000, 32, seed=1), encoding)
    queries = write(tmp_path / "queries.parquet", clustered(3000, 32, seed=1)[::150] * 0.9 + 0.1, role="query")
    invoke("export", corpus, "--features", "-o", tmp_path / "cf.parquet")
    invoke("export", queries, "--features", "-o", tmp_path / "qf.parquet")
    features = pq.read_table(tmp_path / "cf.parquet")
    assert features.column_names == ["id", "features"] and features.schema.field("features").type.list_size == 64

    # The recipe of the README: LanceDB (embedded, a local folder), top 100 by inner product, as a TREC run.
    table = lancedb.connect(tmp_path / "lance").create_table("corpus", features)
    candidates = {}
    for row in pq.read_table(tmp_path / "qf.parquet").to_pylist():
        hits = (table.search(row["features"], vector_column_name="features").distance_type("dot").limit(100)
                .to_arrow())
        candidates[row["id"]] = {doc: -dist for doc, dist in zip(hits["id"].to_pylist(), hits["_distance"].to_pylist())}
    write_run(tmp_path / "lancedb.trec", candidates, "lancedb")

    exact = invoke("score", queries, corpus, "--top-k", "10").stdout
    reranked = invoke("score", queries, corpus, "--candidates", tmp_path / "lancedb.trec", "--top-k", "10").stdout
    assert reranked == exact and len(exact.splitlines()) == 20 * 10

    # DuckDB's recipe gives the same candidates (its own inner product over the same features).
    sql = f"""COPY (SELECT qid, 'Q0', docid, rank, score, 'duckdb' FROM (
        SELECT q.id AS qid, d.id AS docid, list_inner_product(q.features, d.features) AS score,
               row_number() OVER (PARTITION BY q.id ORDER BY score DESC, d.id) AS rank
        FROM '{tmp_path / "qf.parquet"}' q, '{tmp_path / "cf.parquet"}' d) WHERE rank <= 100)
        TO '{tmp_path / "duckdb.trec"}' (FORMAT csv, DELIMITER ' ', HEADER false)"""
    duckdb.sql(sql)
    assert {q: set(d) for q, d in read_run(tmp_path / "duckdb.trec").items()} == {
        q: set(d) for q, d in candidates.items()}
    assert invoke("score", queries, corpus, "--candidates", tmp_path / "duckdb.trec", "--top-k", "10").stdout == exact


def test_the_inner_product_bounds_log_fidelity(tmp_path):
    values = clustered(200, 8, seed=3)
    invoke("export", write(tmp_path / "c.parquet", values), "--features", "-o", tmp_path / "f.parquet")
    f = torch.tensor(pq.read_table(tmp_path / "f.parquet")["features"].to_pylist())
    inner = f[:20] @ f.T
    exact = pairwise_log_fidelity(values[:20], values)
    bound = torch.tensor([[log_fidelity_bound(8, float(x)) for x in row] for row in inner])
    assert (exact <= bound + 1e-4).all() and torch.allclose(inner, torch.cos(values[:20, None] - values).sum(-1),
                                                            atol=1e-5)


def test_cosine_files_export_unit_vectors_and_texts(tmp_path):
    path = tmp_path / "v.parquet"
    vectors = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    with EmbeddingWriter(path, dim=2, metadata=dict(META, similarity="cosine"), column="vectors", texts=True) as w:
        w.write(["a", "b"], vectors, texts=["first", "second"])
    invoke("export", path, "--features", "-o", tmp_path / "f.parquet")
    table = pq.read_table(tmp_path / "f.parquet")
    assert table["features"].to_pylist() == [[0.6000000238418579, 0.800000011920929], [0.0, 1.0]]
    assert table["text"].to_pylist() == ["first", "second"]


def test_candidates_errors_name_the_run(tmp_path):
    corpus = write(tmp_path / "c.parquet", clustered(50, 4, seed=0))
    queries = write(tmp_path / "q.parquet", clustered(5, 4, seed=0), role="query")
    (tmp_path / "bad.trec").write_text("q0 Q0 nope 1 1.0 x\n")
    result = runner.invoke(app, ["score", str(queries), str(corpus), "--candidates", str(tmp_path / "bad.trec")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "bad.trec: the candidates of query 'q0' name document 'nope', which is not in" in result.stderr
    (tmp_path / "bad.trec").write_text("x9 Q0 d1 1 1.0 x\n")
    result = runner.invoke(app, ["score", str(queries), str(corpus), "--candidates", str(tmp_path / "bad.trec")])
    assert result.exit_code == 1 and "the candidates name query 'x9', which the queries do not have" in result.stderr
    # Fewer candidates than --top-k: those there are, exactly scored; a query without candidates: no lines.
    (tmp_path / "few.trec").write_text("q1 Q0 d7 1 0.5 x\nq1 Q0 d3 2 0.4 x\n")
    lines = invoke("score", queries, corpus, "--candidates", tmp_path / "few.trec", "--top-k", "5").stdout.splitlines()
    q, d = read_embeddings(queries), read_embeddings(corpus)
    scores = pairwise_log_fidelity(q.values[1:2], d.values[[7, 3]])[0]
    expected = [doc for _, doc in sorted(zip((-scores).tolist(), ["d7", "d3"]))]
    assert [line.split()[2] for line in lines] == expected and {line.split()[0] for line in lines} == {"q1"}
