"""`qcompress compress`: Parquet that pyarrow, pandas and duckdb read; angles or vectors; resume; bad input."""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from qcompress.cli import app
from qcompress.compress import compress
from qcompress.formats import partial_path, read_embeddings, read_texts
from qcompress.model import build_model, load_model

runner = CliRunner()

DOCS = [
    {"_id": "d1", "title": "wing", "text": "the flow on a wing"},
    {"_id": "d2", "text": "heat transfer in a boundary layer"},
    {"_id": "d3", "text": "pressure of the flow"},
    {"_id": "d4", "text": "what are the boundary layer effects"},
    {"_id": "d5", "text": "a wing"},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def quantum_model(tiny_encoder, tmp_path_factory):
    """A model folder: the tiny BERT and a (random) quantum head 32 -> 16 qubits."""
    folder = tmp_path_factory.mktemp("qmodel")
    build_model(tiny_encoder, head="quantum", dim=16, max_length=64).save(folder)
    return str(folder)


def test_compress_quantum_model_uint8_reads_everywhere(quantum_model, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "docs.parquet"
    result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(out), "--uint8"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # stdout stays clean; messages on stderr
    assert "wrote 5 rows of 16 uint8 angle codes" in result.stderr

    table = pq.read_table(out)
    assert table.column("id").to_pylist() == ["d1", "d2", "d3", "d4", "d5"]  # input order
    meta = json.loads(table.schema.metadata[b"qcompress"])
    assert meta["encoding"] == "uint8" and meta["head"] == "quantum" and meta["dim"] == 16
    assert meta["similarity"] == "fidelity" and len(meta["model_id"]) == 32 and "qcompress_version" in meta

    model = load_model(quantum_model)
    expected = model.encode([t for _, t in read_texts(docs)])
    codes = np.array(table.column("angles").to_pylist(), dtype=np.uint8)
    assert np.abs(codes.astype(int) - np.rint(expected.numpy() / math.pi * 255)).max() <= 1

    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(out)
    assert list(frame["id"]) == ["d1", "d2", "d3", "d4", "d5"] and len(frame["angles"][0]) == 16
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(f"SELECT id, len(angles) AS n FROM read_parquet('{out}') ORDER BY id").fetchall()
    assert rows == [(f"d{i}", 16) for i in range(1, 6)]


def test_compress_head_none_fidelity_writes_the_encoded_input_angles(tiny_encoder, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "qbt.parquet"
    result = runner.invoke(app, ["compress", str(docs), "--encoder", tiny_encoder, "--head", "none",
                                 "--similarity", "fidelity", "--max-length", "64", "-o", str(out)])
    assert result.exit_code == 0, result.output
    emb = read_embeddings(out)
    assert emb.column == "angles" and emb.encoding == "float32" and emb.values.shape == (5, 32)
    model = build_model(tiny_encoder, head="none", similarity="fidelity", max_length=64)
    pooled = torch.cat([model.pool([t]) for _, t in read_texts(docs)])
    assert torch.allclose(emb.values, torch.tanh(pooled) * math.pi / 2 + math.pi / 2, atol=1e-5)


def test_compress_cosine_writes_vectors_and_refuses_uint8(tiny_encoder, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "bt.parquet"
    base = ["compress", str(docs), "--encoder", tiny_encoder, "--max-length", "64", "-o", str(out)]
    result = runner.invoke(app, base)
    assert result.exit_code == 0, result.output
    assert read_embeddings(out).column == "vectors"
    out.unlink()
    result = runner.invoke(app, base + ["--uint8"])
    assert result.exit_code == 1
    assert "uint8 encoding quantises qubit angles" in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists() and not partial_path(out).exists()


def test_compress_tsv_from_stdin(quantum_model, tmp_path):
    out = tmp_path / "q.parquet"
    result = runner.invoke(app, ["compress", "-", "--model", quantum_model, "-o", str(out)],
                           input="q1\twhat is a wing\nq2\theat transfer\n")
    assert result.exit_code == 0, result.output
    assert read_embeddings(out).ids == ["q1", "q2"]


def test_compress_bad_line_fails_before_encoding_and_leaves_nothing(quantum_model, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"_id": "a", "text": "one"}\n{"_id": "b", "text": "two"}\n{"_id": "c", "text": ""}\n')
    out = tmp_path / "out.parquet"
    result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr == f'qcompress: error: {docs}:3: field "text": text is empty; every record needs some text\n'
    assert list(tmp_path.iterdir()) == [docs]  # no output, no partial folder

    docs.write_text('{"_id": "a", "text": "one"}\n{"_id": "b", "text": "two"}\n{"_id": "a", "text": "three"}\n')
    result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(out)])
    assert result.exit_code == 1 and ':3: field "id": duplicate id "a"' in result.stderr
    docs.write_text('{"_id": "a", "text": "one"}\n{"_id": "b", "text": "two"}\n{"_id": "c", "text: 3}\n')
    result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(out)])
    assert result.exit_code == 1 and ":3: malformed JSON" in result.stderr
    assert list(tmp_path.iterdir()) == [docs]


def test_compress_resume_continues_after_written_chunks(quantum_model, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    records = read_texts(docs)
    model = load_model(quantum_model)
    full = tmp_path / "full.parquet"
    compress(records, full, model)

    out = tmp_path / "out.parquet"
    with pytest.raises(KeyboardInterrupt):
        compress(records, out, model, chunk_size=2, batch_size=1, on_batch=interrupt_after(2))
    assert not out.exists() and partial_path(out).is_dir()  # the finished chunk is kept, no final file

    result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert "(2 from the earlier run)" in result.stderr
    resumed, whole = read_embeddings(out), read_embeddings(full)
    assert resumed.ids == whole.ids
    assert torch.allclose(resumed.values, whole.values, atol=1e-6)
    assert not partial_path(out).exists()


def interrupt_after(rows):
    seen = []

    def on_batch(n):
        seen.append(n)
        if sum(seen) > rows:
            raise KeyboardInterrupt

    return on_batch


def test_compress_resume_refuses_other_input(quantum_model, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    other = write_jsonl(tmp_path / "other.jsonl", [{"_id": x, "text": x} for x in "xyz"])
    out = tmp_path / "out.parquet"
    with pytest.raises(KeyboardInterrupt):
        compress(read_texts(other), out, load_model(quantum_model), chunk_size=2, batch_size=1,
                 on_batch=interrupt_after(2))
    result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(out), "--resume"])
    assert result.exit_code == 1
    assert 'cannot resume: the earlier run wrote 2 rows ending with id "y"' in result.stderr
    assert not out.exists()


def test_compress_usage_errors(quantum_model, tiny_encoder, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    cases = [  # 1: bad input, 2: wrong usage
        (["-o", str(tmp_path / "x.parquet"), "--encoder", tiny_encoder, "--head", "quantum"], "untrained, random head",
         2),
        (["-o", str(tmp_path / "x.parquet"), "--model", quantum_model, "--encoder", tiny_encoder], "already names", 2),
        (["-o", "-", "--model", quantum_model, "--resume"], "-o - streams JSON lines", 2),
        (["-o", str(tmp_path / "x.parquet"), "--model", str(tmp_path / "nope")], "not a qcompress model folder", 1),
    ]
    for args, message, code in cases:
        result = runner.invoke(app, ["compress", str(docs), *args])
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]
    missing = str(tmp_path / "missing.jsonl")
    result = runner.invoke(app, ["compress", missing, "-o", "x.parquet", "--model", quantum_model])
    assert result.exit_code == 1 and "file not found" in result.stderr


def test_compress_help():
    result = runner.invoke(app, ["compress", "--help"])
    assert result.exit_code == 0
    for word in ("--uint8", "--resume", "--encoder", "--similarity", "stdout"):
        assert word in result.stdout


def test_compress_cache_fills_and_reuses_pooled_outputs(quantum_model, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    cache = tmp_path / "cache"
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    for out in (first, second):
        result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(out),
                                     "--cache", str(cache)])
        assert result.exit_code == 0, result.output
    assert any(p.is_file() for p in cache.rglob("*"))  # the first run stored pooled outputs
    a, b = read_embeddings(first), read_embeddings(second)
    model = load_model(quantum_model)
    expected = model.encode([t for _, t in read_texts(docs)])
    for emb in (a, b):
        np.testing.assert_allclose(np.asarray(emb.values), expected.numpy(), atol=1e-5)
