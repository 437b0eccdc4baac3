"""`qcompress compress`: Parquet that pyarrow, pandas and duckdb read; angles or vectors; resume; bad input."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from qcompress.cli import app
from qcompress.codes import AngleCodes
from qcompress.compress import compress
from qcompress.errors import InputError
from qcompress.formats import partial_path, read_embeddings, read_texts
from qcompress.formats.metadata import read_metadata
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
    meta = read_metadata(table.schema.metadata)
    assert meta["encoding"] == "uint8" and meta["head"] == "quantum" and meta["dim"] == 16
    assert meta["similarity"] == "fidelity" and len(meta["model_id"]) == 32 and "qcompress_version" in meta

    model = load_model(quantum_model)
    expected = model.encode([t for _, t in read_texts(docs)], convert_to_tensor=True)
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
    assert "cannot resume: chunk 1 (rows 1-2) of this input differs" in result.stderr
    assert not out.exists()


def test_compress_usage_errors(quantum_model, tiny_encoder, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    cases = [  # 1: bad input, 2: wrong usage
        (["-o", str(tmp_path / "x.parquet"), "--encoder", tiny_encoder, "--head", "quantum"], "untrained, random head",
         2),
        (["-o", str(tmp_path / "x.parquet"), "--model", quantum_model, "--similarity", "cosine"], "already names", 2),
        (["-o", "-", "--model", quantum_model, "--resume"], "-o - streams JSON lines", 2),
        (["-o", "-", "--model", quantum_model, "--store-text"], "-o - streams JSON lines", 2),
        (["-o", str(tmp_path / "x.parquet"), "--model", quantum_model, "--role", "passage"], "--role", 2),
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
    expected = model.encode([t for _, t in read_texts(docs)], convert_to_tensor=True)
    for emb in (a, b):
        np.testing.assert_allclose(np.asarray(emb.values), expected.numpy(), atol=1e-5)


# -- issue 14: concurrent writers, resume digests, empty input, permissions, leftovers; issue 15: --store-text --


def test_a_second_compress_to_the_same_output_is_refused_and_keeps_the_first_runs_parts(quantum_model, tmp_path):
    """Issue 14 item 1 (fails on main: both runs wrote into OUT.partial and the final file mixed their inputs)."""
    from qcompress.formats import EmbeddingWriter

    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "out.parquet"
    meta = {"encoder": "x", "head": "quantum", "similarity": "fidelity"}
    live = EmbeddingWriter(out, dim=16, metadata=meta, row_group_size=2)  # another run, still writing
    live.write(["a", "b"], torch.zeros(2, 16))
    before = sorted(p.name for p in partial_path(out).iterdir())
    for extra in ([], ["--resume"]):
        result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(out), *extra])
        assert result.exit_code == 1, result.output
        assert result.stderr.count("\n") == 1 and "another qcompress run is writing this file" in result.stderr
    assert sorted(p.name for p in partial_path(out).iterdir()) == before and not out.exists()
    live.close()
    assert read_embeddings(out).ids == ["a", "b"]


def test_resume_refuses_an_input_changed_inside_a_finished_chunk(quantum_model, tmp_path):
    """Issue 14 item 5 (fails on main: only the row count and the last id were compared)."""
    records = [(f"d{i}", f"text number {i}") for i in range(6)]
    model = load_model(quantum_model)
    out = tmp_path / "out.parquet"
    with pytest.raises(KeyboardInterrupt):
        compress(records, out, model, chunk_size=2, batch_size=1, on_batch=interrupt_after(4))
    changed = list(records)
    changed[2] = ("d2", "a different text")  # inside chunk 2; the last id written (d3) is unchanged
    with pytest.raises(InputError, match=r"chunk 2 \(rows 3-4\) of this input differs"):
        compress(changed, out, model, chunk_size=2, resume=True)
    changed = [("x0", records[0][1])] + records[1:]  # an id changed in chunk 1
    with pytest.raises(InputError, match=r"chunk 1 \(rows 1-2\)"):
        compress(changed, out, model, chunk_size=2, resume=True)
    done = compress(records, out, model, chunk_size=2, resume=True)  # the same input resumes
    assert done == (6, 4) and read_embeddings(out).ids == [r[0] for r in records]


def test_an_interrupted_and_resumed_run_writes_the_same_bytes_as_an_uninterrupted_one(quantum_model, tmp_path):
    """Issue 25: the output is rewritten from the finished parts, so how many runs wrote them does not show."""
    records = [(f"d{i}", f"text number {i}") for i in range(7)]
    model = load_model(quantum_model)
    whole, out = tmp_path / "whole.parquet", tmp_path / "out.parquet"
    compress(records, whole, model, chunk_size=2, encoding="uint8", store_text=True)
    for rows in (2, 4):  # interrupted twice, each time after `rows` more rows
        with pytest.raises(KeyboardInterrupt):
            compress(records, out, model, chunk_size=2, batch_size=1, encoding="uint8", store_text=True,
                     resume=out.with_name("out.parquet.partial").exists(), on_batch=interrupt_after(rows))
    assert compress(records, out, model, chunk_size=2, encoding="uint8", store_text=True, resume=True) == (7, 4)
    assert out.read_bytes() == whole.read_bytes()


def test_resume_of_a_folder_left_by_an_older_qcompress_is_one_line(quantum_model, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "out.parquet"
    partial_path(out).mkdir()
    (partial_path(out) / "journal.jsonl").write_text('{"format": 2}\n')
    result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(out), "--resume"])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "another qcompress version" in result.stderr and "delete the folder" in result.stderr
    assert not out.exists()


def test_empty_input_is_an_error_unless_allowed(quantum_model, tmp_path):
    """Issue 14 item 16 (fails on main: an empty input wrote an empty file and exited 0)."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    out = tmp_path / "out.parquet"
    result = runner.invoke(app, ["compress", str(empty), "--model", quantum_model, "-o", str(out)])
    assert result.exit_code == 1 and "no records to compress" in result.stderr and "--allow-empty" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl"]
    result = runner.invoke(app, ["compress", str(empty), "--model", quantum_model, "-o", str(out), "--allow-empty"])
    assert result.exit_code == 0, result.output
    assert read_embeddings(out).ids == []


def test_a_failed_run_leaves_no_partial_folder_and_outputs_follow_the_umask(quantum_model, tmp_path):
    """Issue 14 item 16 (fails on main: an empty OUT.partial/ stayed after a run stopped before its first chunk
    was written; the umask part already held on main and is kept here)."""
    import os

    out = tmp_path / "out.parquet"
    with pytest.raises(KeyboardInterrupt):  # stopped while encoding the first chunk
        compress([(f"d{i}", f"text {i}") for i in range(5)], out, load_model(quantum_model), batch_size=1,
                 on_batch=interrupt_after(0))
    assert not out.exists() and not partial_path(out).exists()
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"_id": "a", "text": "one"}\n{"_id": "b", "text": "two"}\n{"_id": "a", "text": "dup"}\n')
    result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(out)])
    assert result.exit_code == 1 and not partial_path(out).exists()
    old = os.umask(0o027)
    try:
        write_jsonl(docs, DOCS)
        result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert out.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_a_bad_line_after_finished_chunks_keeps_them_for_resume(quantum_model, tmp_path, monkeypatch):
    """Streaming: the input is checked as it is read, so a bad line half-way stops the run after the chunks
    before it; fixing the line and resuming encodes only the rest."""
    from qcompress.formats import iter_texts
    from qcompress.formats import texts as texts_module

    monkeypatch.setattr(texts_module, "CHECK_BATCH", 2)  # the reader checks 2 lines at a time here
    model = load_model(quantum_model)
    lines = [json.dumps({"_id": f"d{i}", "text": f"text {i}"}) for i in range(5)]
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(lines[:4] + ['{"_id": "d4", "text": ""}']) + "\n")
    out = tmp_path / "out.parquet"
    with pytest.raises(InputError, match=':5: field "text"'):
        compress(iter_texts(docs), out, model, chunk_size=2)
    assert not out.exists() and partial_path(out).is_dir()
    docs.write_text("\n".join(lines) + "\n")
    assert compress(iter_texts(docs), out, model, chunk_size=2, resume=True) == (5, 4)
    assert read_embeddings(out).ids == [f"d{i}" for i in range(5)]


def test_store_text_adds_a_text_column_that_readers_expose(quantum_model, tmp_path):
    """Issue 15: compress --store-text."""
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "out.parquet"
    result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(out), "--store-text"])
    assert result.exit_code == 0, result.output
    assert str(pq.read_schema(out).field("text").type) == "string"
    emb = read_embeddings(out, texts=True)
    assert emb.texts == [t for _, t in read_texts(docs)]
    assert read_embeddings(out).texts is None  # only when asked for


# -- low-bit codes: compress --bits, a model's codec, quantize --------------------------------------------------


def codes_and_meta(path):
    table = pq.read_table(path)
    return table.column("id").to_pylist(), table.column("codes"), read_metadata(table.schema.metadata)


def test_compress_bits_stores_codes_and_quantize_of_the_float32_file_gives_the_same(quantum_model, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    coded, plain, quantized = tmp_path / "c4.parquet", tmp_path / "f32.parquet", tmp_path / "q4.parquet"
    result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(coded), "--bits", "4"])
    assert result.exit_code == 0, result.output
    assert ("wrote 5 rows of 16 qubits as 4-bit codes (8 bytes a row; levels fitted per qubit (Lloyd-Max, seed 0) "
            "on the first 5 rows of the corpus)") in result.stderr
    ids, codes, meta = codes_and_meta(coded)
    assert ids == ["d1", "d2", "d3", "d4", "d5"] and codes.type == pa.binary(8)
    assert (meta["encoding"], meta["column"], meta["codes"]["bits"], meta["head"]) == ("codes", "codes", 4, "quantum")
    model = load_model(quantum_model)
    angles = model.encode([t for _, t in read_texts(docs)], convert_to_tensor=True)
    codec = AngleCodes.fit(angles, 4)
    assert AngleCodes.from_metadata(meta["codes"]) == codec
    assert torch.equal(read_embeddings(coded).values, codec.decode(codec.encode(angles)))

    assert runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(plain)]).exit_code == 0
    for extra in ([], ["--model", quantum_model]):  # the model has no codec: levels fitted on the file either way
        result = runner.invoke(app, ["quantize", str(plain), "--bits", "4", "-o", str(quantized), "--force", *extra])
        assert result.exit_code == 0, result.output
        assert "wrote 5 rows of 16 qubits as 4-bit codes" in result.stderr
        assert codes_and_meta(quantized) == (ids, codes, meta)  # same codes, same levels, same metadata


def test_compress_bits_resume_codes_with_the_interrupted_runs_levels(quantum_model, tmp_path, monkeypatch):
    import qcompress.compress as compress_module

    records = [(f"d{i}", f"text number {i} of the flow") for i in range(7)]
    model = load_model(quantum_model)
    monkeypatch.setattr(compress_module, "FIT_ROWS", 2)  # levels fitted on the first chunk of 2 rows
    whole, out = tmp_path / "whole.parquet", tmp_path / "out.parquet"
    compress(records, whole, model, chunk_size=2, bits=3)
    with pytest.raises(KeyboardInterrupt):
        compress(records, out, model, chunk_size=2, bits=3, on_batch=interrupt_after(4))
    monkeypatch.setattr(compress_module, "FIT_ROWS", 4)  # a fit now would give other levels: the journal's are kept
    assert compress(records, out, model, chunk_size=2, bits=3, resume=True) == (7, 4)
    assert out.read_bytes() == whole.read_bytes()
    assert "first 2 rows" in codes_and_meta(out)[2]["codes"]["levels_source"]


@pytest.fixture
def model_with_codec(quantum_model, monkeypatch):
    """`--model quantum_model` loads with a 3-bit codec, as a model trained with `--bits 3` would
    (QCompressModel.codec)."""
    from qcompress.model import ModelSpec

    codec = AngleCodes.fit(torch.rand(300, 16) * math.pi, 3)
    load = ModelSpec.load

    def with_codec(self, device=None):
        model = load(self, device)
        model.codec = codec
        return model

    monkeypatch.setattr(ModelSpec, "load", with_codec)
    return codec


def test_a_model_with_a_codec_stores_its_codes_unless_told_otherwise(quantum_model, model_with_codec, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)

    def run(name, *extra):
        out = tmp_path / name if name != "-" else name
        result = runner.invoke(app, ["compress", str(docs), "--model", quantum_model, "-o", str(out), *extra])
        return result, out

    result, out = run("default.parquet")
    assert result.exit_code == 0, result.output
    assert "as 3-bit codes (6 bytes a row; levels the model's codec (codes.safetensors))" in result.stderr
    assert read_embeddings(out).codec == model_with_codec
    result, out = run("f32.parquet", "--float32")
    assert result.exit_code == 0 and read_embeddings(out).encoding == "float32"
    result, out = run("u8.parquet", "--uint8")
    assert result.exit_code == 0 and read_embeddings(out).encoding == "uint8"
    result, out = run("b2.parquet", "--bits", "2")  # other bits than the model's: levels fitted on the input
    assert result.exit_code == 0 and "2-bit codes (4 bytes a row; levels fitted per qubit" in result.stderr
    result, out = run("b3.parquet", "--bits", "3")
    assert read_embeddings(out).codec == model_with_codec
    result = runner.invoke(app, ["quantize", str(tmp_path / "f32.parquet"), "--bits", "3", "--model", quantum_model,
                                 "-o", str(tmp_path / "q3.parquet")])
    assert result.exit_code == 0, result.output
    assert codes_and_meta(tmp_path / "q3.parquet") == codes_and_meta(out)  # compress --bits 3 = quantize --bits 3
    result, _ = run("-")  # JSON lines cannot carry the levels
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "this model stores 3-bit codes by default, which -o - (JSON lines) cannot write; pass --float32" in (
        result.stderr)
    result, _ = run("-", "--float32")
    assert result.exit_code == 0 and '"angles": [' in result.stdout


def test_codes_usage_errors_are_one_line(quantum_model, tiny_encoder, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    out = str(tmp_path / "x.parquet")
    cases = [  # 1: bad input, 2: wrong usage
        (["-o", out, "--model", quantum_model, "--bits", "4", "--uint8"], "--bits and --uint8 are ways to store", 2),
        (["-o", out, "--model", quantum_model, "--bits", "4", "--float32"], "--bits and --float32", 2),
        (["-o", out, "--model", quantum_model, "--bits", "9"], "--bits", 2),
        (["-o", "-", "--model", quantum_model, "--bits", "4"], "--bits: codes need a Parquet file", 2),
        (["-o", out, "--encoder", tiny_encoder, "--bits", "4"], "4-bit codes store qubit angles; this model outputs "
         "cosine vectors", 1),
    ]
    for args, message, code in cases:
        result = runner.invoke(app, ["compress", str(docs), *args])
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]


def test_quantize_refuses_vectors_coded_files_and_another_model_in_one_line(quantum_model, tiny_encoder, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    files = {}
    for name, extra in (("vectors", ["--encoder", tiny_encoder]), ("u8", ["--model", quantum_model, "--uint8"]),
                        ("c4", ["--model", quantum_model, "--bits", "4"]), ("f32", ["--model", quantum_model])):
        files[name] = tmp_path / f"{name}.parquet"
        assert runner.invoke(app, ["compress", str(docs), "-o", str(files[name]), *extra]).exit_code == 0
    other = tmp_path / "other"
    build_model(tiny_encoder, head="quantum", dim=16, max_length=64).save(other)  # other random weights
    out = tmp_path / "q.parquet"
    cases = [
        ([str(files["vectors"])], "holds cosine vectors; only angle files (fidelity models) are coded", 1),
        ([str(files["u8"])], 'field "encoding": is already coded (uint8 (8-bit) codes)', 1),
        ([str(files["c4"])], 'field "encoding": is already coded (4-bit codes); quantize the float32 file', 1),
        ([str(files["f32"]), "--model", str(other)], "the model and", 1),
        ([str(files["f32"]), "-o", str(files["f32"]), "--force"], "-o names INPUT itself", 2),
        ([str(files["f32"]), "-o", str(files["c4"])], "exists; pass --force", 2),
        ([str(files["f32"]), "--bits", "0"], "--bits", 2),
    ]
    for args, message, code in cases:
        result = runner.invoke(app, ["quantize", "--bits", "4", "-o", str(out), *args])
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()
