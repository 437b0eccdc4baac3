"""Input texts and pairs, embedding Parquet (write, resume, read, uint8), TREC runs and qrels."""

from __future__ import annotations

import io
import json
import math
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from qcompress.codes import AngleCodes
from qcompress.errors import InputError
from qcompress.formats import (
    EmbeddingWriter,
    check_same_model,
    dequantize_angles,
    iter_embedding_batches,
    iter_texts,
    partial_path,
    quantize_angles,
    read_embedding_metadata,
    read_embeddings,
    read_pairs,
    read_parquet_texts,
    read_qrels,
    read_run,
    read_texts,
    scan_embeddings,
    write_run,
)
from qcompress.formats.embeddings import codec_of
from qcompress.formats.writer import earlier_metadata
from qcompress.formats.metadata import describe_values, read_metadata
from qcompress.formats.texts import TextFields

META = {"encoder": "minilm", "head": "quantum", "similarity": "fidelity"}


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def raises_at(err: pytest.ExceptionInfo, file, line: int | None, field: str | None = None) -> str:
    """Check the error names the file, line and field, and return its message."""
    assert str(err.value.file) == str(file)
    assert err.value.line == line
    assert err.value.field == field
    message = str(err.value)
    assert message.startswith(f"{file}:{line}: " if line is not None else f"{file}: ")
    if field is not None:
        assert f'field "{field}"' in message
    return message


# -- read_texts ------------------------------------------------------------------------------------------------


def test_read_texts_jsonl_title_rule_ids_and_blank_lines(tmp_path):
    path = write(
        tmp_path,
        "docs.jsonl",
        '{"_id": "d1", "title": "Wings", "text": "lift and drag "}\n'
        "\n"
        '{"id": 7, "text": "  no title  "}\n'
        '{"_id": "d3", "title": "", "text": "empty title"}\n'
        '{"_id": "d4", "title": null, "text": "null title"}\n',
    )
    assert read_texts(path) == [
        ("d1", "Wings lift and drag"),
        ("7", "no title"),
        ("d3", "empty title"),
        ("d4", "null title"),
    ]


def test_read_texts_tsv_with_header(tmp_path):
    path = write(tmp_path, "docs.tsv", "id\ttext\n1\tfirst doc\n\n2\tsecond\n")
    assert read_texts(path) == [("1", "first doc"), ("2", "second")]
    path = write(tmp_path, "docs.txt", "_id\ttext\nq\tquery text\n")
    assert read_texts(path) == [("q", "query text")]


def test_read_texts_tsv_extra_columns_are_an_error_naming_the_line(tmp_path):
    """Issue 14 item 16: a third column used to be folded into the text (main read "second\twith a tab")."""
    path = write(tmp_path, "docs.tsv", "1\tfirst doc\n2\tsecond\twith a tab\n")
    with pytest.raises(InputError) as err:
        read_texts(path)
    assert "3 tab-separated fields: expected exactly 2" in raises_at(err, path, 2)


def test_read_texts_csv_with_a_header_quotes_and_named_fields(tmp_path):
    path = write(tmp_path, "docs.csv", 'id,title,text\nd1,Wings,"lift, and ""drag"""\n\nd2,,"two\nlines"\n')
    assert read_texts(path) == [("d1", 'Wings lift, and "drag"'), ("d2", "two\nlines")]
    path = write(tmp_path, "pyserini.csv", "docid,contents\n7,first\n8,second\n")
    fields = TextFields.named(id="docid", text="contents")
    assert read_texts(path, fields=fields) == [("7", "first"), ("8", "second")]
    with pytest.raises(InputError) as err:
        read_texts(path)  # the default names: no _id or id field
    assert 'missing id: each record needs a "_id" or "id" field' in raises_at(err, path, 2, "_id")
    bad = write(tmp_path, "bad.csv", "id,text\na,x\nb,y,z\n")
    with pytest.raises(InputError) as err:
        read_texts(bad)
    assert "3 values, but the header names 2 fields" in raises_at(err, bad, 3)
    dup = write(tmp_path, "dup.csv", "id,text\na,x\na,y\n")
    with pytest.raises(InputError) as err:
        read_texts(dup)
    assert 'duplicate id "a" (first on line 2)' in raises_at(err, dup, 3, "id")
    empty = write(tmp_path, "empty.csv", "id,text\na,\n")
    with pytest.raises(InputError) as err:
        read_texts(empty)
    assert "text is empty" in raises_at(err, empty, 2, "text")


def test_read_texts_parquet_streams_rows_with_named_fields(tmp_path, monkeypatch):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"docid": [1, 2, 3], "contents": ["a wing", "heat", "flow"],
                             "headline": ["T", None, "F"]}), path)
    monkeypatch.setattr("qcompress.formats.tables.BATCH_ROWS", 2)  # rows of several batches
    fields = TextFields.named(id="docid", text="contents", title="headline")
    assert read_texts(path, fields=fields) == [("1", "T a wing"), ("2", "heat"), ("3", "F flow")]
    assert list(iter_texts(path, fields=fields))[2] == ("3", "F flow")
    assert read_parquet_texts(path, fields) == read_texts(path, fields=fields)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", None, "z"]}), bad)
    with pytest.raises(InputError) as err:
        read_texts(bad)
    assert "must be a string, got null" in raises_at(err, f"{bad} row 2", None, "text")
    dup = tmp_path / "dup.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "a"], "text": ["x", "y", "z"]}), dup)
    with pytest.raises(InputError) as err:
        read_texts(dup)
    assert 'duplicate id "a" (first on row 1)' in raises_at(err, f"{dup} row 3", None, "id")


def test_read_texts_jsonl_with_named_fields_and_tsv_refuses_them(tmp_path):
    path = write(tmp_path, "docs.jsonl", '{"docid": "d1", "contents": "lift"}\n{"docid": "d2", "contents": 5}\n')
    fields = TextFields.named(id="docid", text="contents")
    with pytest.raises(InputError) as err:
        read_texts(path, fields=fields)
    assert "must be a string, got 5" in raises_at(err, path, 2, "contents")
    assert read_texts(write(tmp_path, "ok.jsonl", '{"docid": "d1", "contents": "lift"}\n'), fields=fields) == [
        ("d1", "lift")]
    tsv = write(tmp_path, "docs.tsv", "1\tfirst\n")
    with pytest.raises(InputError, match="TSV lines are `id<TAB>text`, without field names"):
        read_texts(tsv, fields=fields)


def test_read_texts_stdin_sniffs_format(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO('\n{"id": "a", "text": "x"}\n'))
    assert read_texts("-") == [("a", "x")]
    monkeypatch.setattr(sys, "stdin", io.StringIO("a\tx\nb\ty\n"))
    assert read_texts("-") == [("a", "x"), ("b", "y")]
    monkeypatch.setattr(sys, "stdin", io.StringIO("a\tx\na\ty\n"))
    with pytest.raises(InputError) as err:
        read_texts("-")
    assert raises_at(err, "<stdin>", 2, "id")


def test_read_texts_unknown_extension_sniffs(tmp_path):
    assert read_texts(write(tmp_path, "docs.data", '{"id": "a", "text": "x"}\n')) == [("a", "x")]
    assert read_texts(write(tmp_path, "docs.other", "a\tx\n")) == [("a", "x")]


def test_read_texts_custom_id_fields(tmp_path):
    path = write(tmp_path, "docs.jsonl", '{"docid": "x1", "text": "t"}\n')
    assert read_texts(path, id_fields=("docid",)) == [("x1", "t")]


@pytest.mark.parametrize(
    "content, line, field, words",
    [
        ('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "oops"\n', 2, None, "malformed JSON"),
        ('{"text": "no id"}\n', 1, "_id", "missing id"),
        ('{"_id": 1.5, "text": "x"}\n', 1, "_id", "string or an integer"),
        ('{"_id": "1", "title": "t"}\n', 1, "text", "missing"),
        ('{"_id": "1", "text": 5}\n', 1, "text", "must be a string"),
        ('{"_id": "1", "title": 3, "text": "x"}\n', 1, "title", "must be a string"),
        ('{"_id": "1", "text": "   "}\n', 1, "text", "empty"),
        ('{"_id": "", "text": "x"}\n', 1, "_id", "empty"),
        ('{"_id": "a b", "text": "x"}\n', 1, "_id", "whitespace"),
        ('\n{"_id": "1", "text": "x"}\n\n{"_id": "1", "text": "y"}\n', 4, "id", "first on line 2"),
        ('[{"_id": "1", "text": "x"}]\n', 1, None, "jq"),
        ('"just a string"\n', 1, None, "JSON object"),
    ],
)
def test_read_texts_jsonl_errors(tmp_path, content, line, field, words):
    path = write(tmp_path, "bad.jsonl", content)
    with pytest.raises(InputError) as err:
        read_texts(path)
    assert words in raises_at(err, path, line, field)


@pytest.mark.parametrize(
    "content, line, field, words",
    [
        ("1\tok\n2 no tab here\n", 2, None, "no tab"),
        ("1\tok\n2\t  \n", 2, "text", "empty"),
        ("1\tok\n\t text\n", 2, "id", "empty"),
        ("1\tok\n1\tagain\n", 2, "id", "first on line 1"),
    ],
)
def test_read_texts_tsv_errors(tmp_path, content, line, field, words):
    path = write(tmp_path, "bad.tsv", content)
    with pytest.raises(InputError) as err:
        read_texts(path)
    assert words in raises_at(err, path, line, field)


def test_read_texts_allow_empty_and_missing_file(tmp_path):
    path = write(tmp_path, "docs.jsonl", '{"_id": "1", "text": ""}\n')
    assert read_texts(path, allow_empty=True) == [("1", "")]
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(InputError) as err:
        iter_texts(missing)  # fails at once, before any record is consumed
    assert "not found" in raises_at(err, missing, None)


def test_read_texts_rejects_non_utf8(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes(b"1\tok\n2\tcaf\xe9\n")
    with pytest.raises(InputError) as err:
        read_texts(path)
    assert "UTF-8" in raises_at(err, path, 2)


def test_iter_texts_streams_a_batch_at_a_time(tmp_path):
    """Records are read CHECK_BATCH at a time: a bad line beyond the first batch is not read before that batch
    is used, and a duplicate inside a batch is refused before any of it is yielded."""
    from qcompress.formats.texts import CHECK_BATCH

    good = "".join(f"{i}\ttext {i}\n" for i in range(CHECK_BATCH))
    path = write(tmp_path, "docs.tsv", good + "broken\n")
    stream = iter_texts(path)
    assert [next(stream) for _ in range(CHECK_BATCH)][-1] == (str(CHECK_BATCH - 1), f"text {CHECK_BATCH - 1}")
    with pytest.raises(InputError) as err:
        next(stream)
    raises_at(err, path, CHECK_BATCH + 1)
    path = write(tmp_path, "dup.tsv", "1\ta\n2\tb\n1\tc\n")
    with pytest.raises(InputError) as err:
        next(iter_texts(path))
    assert "first on line 1" in raises_at(err, path, 3, "id")


# -- read_pairs ------------------------------------------------------------------------------------------------


def test_read_pairs_tsv_and_jsonl(tmp_path, monkeypatch):
    tsv = write(tmp_path, "pairs.tsv", "query\tpassage\nwhat is lift\tLift is a force.\n\nq2\tp2\n")
    assert read_pairs(tsv) == [("what is lift", "Lift is a force."), ("q2", "p2")]
    jsonl = write(
        tmp_path,
        "pairs.jsonl",
        '{"query": "a", "passage": "b"}\n{"query": "c", "text": "d"}\n{"query": "e", "document": "f"}\n',
    )
    assert read_pairs(jsonl) == [("a", "b"), ("c", "d"), ("e", "f")]
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"query": "a", "passage": "b"}\n'))
    assert read_pairs("-") == [("a", "b")]


@pytest.mark.parametrize(
    "name, content, line, field, words",
    [
        ("p.tsv", "q\tp\nq only\n", 2, None, "query<TAB>passage"),
        ("p.tsv", "q\tp\nid\tq\tp\n", 2, None, "3 tab-separated fields"),
        ("p.tsv", "q\tp\n \tp\n", 2, "query", "empty"),
        ("p.tsv", "q\t \n", 1, "passage", "empty"),
        ("p.jsonl", '{"passage": "p"}\n', 1, "query", "missing"),
        ("p.jsonl", '{"query": 1, "passage": "p"}\n', 1, "query", "must be a string"),
        ("p.jsonl", '{"query": "q"}\n', 1, "passage", "missing"),
        ("p.jsonl", '{"query": "q", "text": ""}\n', 1, "text", "empty"),
        ("p.jsonl", '{"query": "q", "passage": "p"}\n{bad\n', 2, None, "malformed JSON"),
    ],
)
def test_read_pairs_errors(tmp_path, name, content, line, field, words):
    path = write(tmp_path, name, content)
    with pytest.raises(InputError) as err:
        read_pairs(path)
    assert words in raises_at(err, path, line, field)


# -- angle quantisation ----------------------------------------------------------------------------------------


def test_uint8_round_trip_error_bound():
    theta = np.linspace(0, math.pi, 100_003)
    codes = quantize_angles(theta)
    assert codes.dtype == np.uint8 and codes.min() == 0 and codes.max() == 255
    back = dequantize_angles(codes)
    assert back.dtype == np.float32
    assert np.abs(back - theta).max() <= math.pi / 255 / 2 + 1e-6
    t = torch.rand(64, 32, generator=torch.Generator().manual_seed(0)) * math.pi
    t_codes = quantize_angles(t)
    assert t_codes.dtype == torch.uint8
    assert (dequantize_angles(t_codes) - t).abs().max() <= math.pi / 255 / 2 + 1e-6
    assert quantize_angles(np.array([-0.1, 3.3])).tolist() == [0, 255]  # clipped
    with pytest.raises(ValueError, match="NaN"):
        quantize_angles(np.array([float("nan")]))


# -- embedding files -------------------------------------------------------------------------------------------


def angles(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(rows, dim, generator=torch.Generator().manual_seed(seed)) * math.pi


def test_write_read_float32_with_metadata_and_row_groups(tmp_path):
    out = tmp_path / "emb.parquet"
    values = angles(10, 6)
    ids = [f"d{i}" for i in range(10)]
    with EmbeddingWriter(out, dim=6, metadata=dict(META, model_id="abc"), row_group_size=4) as writer:
        writer.write(ids[:3], values[:3])
        writer.write(ids[3:], values[3:].numpy())
        assert writer.rows_written == 10
        assert not out.exists()  # nothing at the final path before close
    assert out.exists() and not partial_path(out).exists()
    emb = read_embeddings(out)
    assert emb.ids == ids and emb.encoding == "float32" and emb.dim == 6 and len(emb) == 10
    assert emb.values.dtype == torch.float32 and torch.equal(emb.values, values)
    from qcompress import __version__

    described = describe_values({"column": "angles", "encoding": "float32"})
    assert emb.metadata == dict(
        META, model_id="abc", dim=6, encoding="float32", column="angles", qcompress_version=__version__, **described
    )
    assert read_embedding_metadata(out) == emb.metadata
    schema = pq.read_schema(out)
    assert schema.field("angles").type == pa.list_(pa.float32(), 6)
    # One readable key per field, each value JSON: the head, the score's formula, how a value decodes.
    assert json.loads(schema.metadata[b"qcompress.head"]) == "quantum"
    assert json.loads(schema.metadata[b"qcompress.score"]).startswith("log-fidelity(q, d) = sum over qubits")
    assert b"qcompress" not in schema.metadata and b"qcompress.scale" not in schema.metadata
    batches = list(iter_embedding_batches(out))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert sum((b[0] for b in batches), []) == ids
    assert torch.equal(torch.cat([b[1] for b in batches]), values)


def test_write_read_uint8(tmp_path):
    out = tmp_path / "emb8.parquet"
    values = angles(20, 8)
    with EmbeddingWriter(out, dim=8, metadata=META, encoding="uint8") as writer:
        writer.write([str(i) for i in range(20)], values)
    assert pq.read_schema(out).field("angles").type == pa.list_(pa.uint8(), 8)
    emb = read_embeddings(out)
    assert emb.encoding == "uint8" and emb.values.dtype == torch.float32
    assert (emb.values - values).abs().max() <= math.pi / 255 / 2 + 1e-6


def test_write_vectors_column(tmp_path):
    out = tmp_path / "vec.parquet"
    meta = {"encoder": "minilm", "head": "linear", "similarity": "cosine"}
    vectors = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    with EmbeddingWriter(out, dim=4, metadata=meta, column="vectors") as writer:
        writer.write(["a", "b", "c"], vectors)
    emb = read_embeddings(out)
    assert emb.column == "vectors" and torch.equal(emb.values, vectors)


def test_writer_rejects_bad_arguments(tmp_path):
    out = tmp_path / "e.parquet"
    with pytest.raises(ValueError, match="cosine vectors"):
        EmbeddingWriter(out, dim=4, metadata=META, encoding="uint8", column="vectors")
    with pytest.raises(ValueError, match="dim"):
        EmbeddingWriter(out, dim=4, metadata=dict(META, dim=5))
    writer = EmbeddingWriter(out, dim=4, metadata=META)
    with pytest.raises(ValueError, match="shape"):
        writer.write(["a"], np.zeros((1, 3)))
    with pytest.raises(ValueError, match="2 ids for 1 rows"):
        writer.write(["a", "b"], np.zeros((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        writer.write(["a"], np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match=r"\[0, pi\]"):
        writer.write(["a"], np.full((1, 4), 4.0))
    writer.close()
    assert read_embeddings(out).ids == []  # nothing was written by the failed calls


def test_failure_leaves_partial_and_resume_continues(tmp_path):
    out = tmp_path / "emb.parquet"
    values = angles(7, 5)
    ids = [f"doc-{i}" for i in range(7)]

    with pytest.raises(RuntimeError, match="encoder crashed"):
        with EmbeddingWriter(out, dim=5, metadata=META, row_group_size=2) as writer:
            writer.write(ids[:2], values[:2])  # row group 1
            writer.write(ids[2:4], values[2:4])  # row group 2
            raise RuntimeError("encoder crashed")
    assert not out.exists()
    assert partial_path(out).is_dir()

    with EmbeddingWriter(out, dim=5, metadata=META, row_group_size=2, resume=True) as writer:
        assert writer.rows_written == 4 and writer.last_id == "doc-3"
        writer.write(ids[4:], values[4:])
        assert not out.exists()
    emb = read_embeddings(out)
    assert emb.ids == ids and torch.equal(emb.values, values)
    assert not partial_path(out).exists()


KILLED_WRITER = """
import os, signal, sys, torch
from qcompress.formats import EmbeddingWriter, partial_path
out, values = sys.argv[1], torch.load(sys.argv[2])
writer = EmbeddingWriter(out, dim=3, metadata={META!r}, row_group_size=2)
writer.write([str(i) for i in range(3)], values[:3])  # one part on disk, one row buffered
# Killed half-way through the next part: half a temporary file, a renamed part whose journal line is torn.
(partial_path(out) / ".part-000003.arrow.x.tmp").write_bytes(b"half a part")
(partial_path(out) / "part-000002.arrow").write_bytes(b"a part")
with open(partial_path(out) / "journal.jsonl", "ab") as journal:
    journal.write(b'{{"part": "part-000002.arrow", "rows": 2')
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_resume_after_a_kill_keeps_finished_row_groups(tmp_path):
    import subprocess

    out = tmp_path / "emb.parquet"
    values = angles(6, 3)
    torch.save(values, tmp_path / "values.pt")
    code = KILLED_WRITER.format(META=META)
    done = subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "values.pt")], capture_output=True)
    assert done.returncode == -9, done.stderr.decode()
    assert not out.exists() and partial_path(out).is_dir()
    resumed = EmbeddingWriter(out, dim=3, metadata=META, row_group_size=2, resume=True)  # the lock died with it
    assert resumed.rows_written == 2 and resumed.last_id == "1"
    assert [g.rows for g in resumed.row_groups] == [2]
    assert sorted(p.name for p in partial_path(out).iterdir()) == ["journal.jsonl", "lock", "part-000001.arrow"]
    resumed.write([str(i) for i in range(2, 6)], values[2:])
    resumed.close()
    emb = read_embeddings(out)
    assert emb.ids == [str(i) for i in range(6)] and torch.equal(emb.values, values)
    assert pq.ParquetFile(out).metadata.num_row_groups == 3


def test_resume_with_other_metadata_is_refused_and_no_resume_starts_over(tmp_path):
    out = tmp_path / "emb.parquet"
    with pytest.raises(KeyboardInterrupt):
        with EmbeddingWriter(out, dim=4, metadata=META) as writer:
            writer.write(["a"], angles(1, 4))
            raise KeyboardInterrupt
    with pytest.raises(InputError) as err:
        EmbeddingWriter(out, dim=4, metadata=dict(META, encoder="other"), resume=True)
    message = raises_at(err, partial_path(out), None)
    assert 'encoder "minilm" vs "other"' in message and "start over without resuming" in message
    with pytest.raises(InputError, match="encoding"):
        EmbeddingWriter(out, dim=4, metadata=META, encoding="uint8", resume=True)
    with EmbeddingWriter(out, dim=4, metadata=META) as writer:  # no resume: the old parts are discarded
        assert writer.rows_written == 0
        writer.write(["b"], angles(1, 4, seed=3))
    assert read_embeddings(out).ids == ["b"]


def test_resume_without_partial_starts_fresh(tmp_path):
    out = tmp_path / "emb.parquet"
    with EmbeddingWriter(out, dim=2, metadata=META, resume=True) as writer:
        assert writer.rows_written == 0
        writer.write(["a"], angles(1, 2))
    assert read_embeddings(out).ids == ["a"]


def test_folder_of_parquet_files(tmp_path):
    folder = tmp_path / "shards"
    values = angles(5, 4)
    for name, rows in (("part-b.parquet", range(3, 5)), ("part-a.parquet", range(0, 3))):
        with EmbeddingWriter(folder / name, dim=4, metadata=META) as writer:
            writer.write([f"d{i}" for i in rows], values[list(rows)])
    emb = read_embeddings(folder)
    assert emb.ids == [f"d{i}" for i in range(5)]  # files sorted by name
    assert torch.equal(emb.values, values)
    assert [ids for ids, _ in iter_embedding_batches(folder)] == [["d0", "d1", "d2"], ["d3", "d4"]]

    with EmbeddingWriter(folder / "part-c.parquet", dim=4, metadata=dict(META, head="linear")) as writer:
        writer.write(["d9"], values[:1])
    with pytest.raises(InputError) as err:
        read_embeddings(folder)
    assert 'head "quantum" vs "linear"' in raises_at(err, folder / "part-c.parquet", None)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no \\*.parquet files"):
        read_embeddings(empty)


def test_duplicate_ids_across_files(tmp_path):
    folder = tmp_path / "shards"
    for name in ("a.parquet", "b.parquet"):
        with EmbeddingWriter(folder / name, dim=2, metadata=META) as writer:
            writer.write(["same"], angles(1, 2))
    with pytest.raises(InputError) as err:
        read_embeddings(folder)
    assert "duplicate id" in raises_at(err, folder / "b.parquet", None, "id")


def qcompress_table(values: pa.Array, *, meta: dict | None = None, column: str = "angles",
                    ids: list[str] | None = None) -> pa.Table:
    table = pa.table({"id": pa.array(ids or [str(i) for i in range(len(values))]), column: values})
    if meta is not None:
        table = table.replace_schema_metadata({b"qcompress": json.dumps(meta)})
    return table


def test_read_rejects_files_not_written_by_qcompress(tmp_path):
    fixed = pa.FixedSizeListArray.from_arrays(pa.array([0.1, 0.2], pa.float32()), 2)
    path = tmp_path / "plain.parquet"
    pq.write_table(qcompress_table(fixed), path)
    with pytest.raises(InputError) as err:
        read_embeddings(path)
    message = raises_at(err, path, None)
    assert "has no qcompress metadata" in message and "qcompress meta copy ORIGINAL.parquet THIS.parquet" in message

    not_parquet = write(tmp_path, "text.parquet", "hello")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_embeddings(not_parquet)
    with pytest.raises(InputError, match="not found"):
        read_embeddings(tmp_path / "missing.parquet")


def test_read_rejects_wrong_column_type_nan_and_range(tmp_path):
    meta = dict(META, dim=2, encoding="float32", column="angles")
    # A DataFrame's list<float> (pandas, DuckDB) reads when every row has dim values; a row that has not is named.
    for lists in (pa.list_(pa.float32()), pa.large_list(pa.float32())):
        path = tmp_path / "list.parquet"
        pq.write_table(qcompress_table(pa.array([[0.1, 0.2]], lists), meta=meta), path)
        assert read_embeddings(path).values.tolist() == [[pytest.approx(0.1), pytest.approx(0.2)]]
        pq.write_table(qcompress_table(pa.array([[0.1, 0.2], [0.1, 0.2, 0.3]], lists), meta=meta, ids=["a", "b"]),
                       path)
        with pytest.raises(InputError) as err:
            read_embeddings(path)
        assert raises_at(err, path, None, "angles").endswith('row 2 (id "b") has 3 values; every row needs 2')
    path = tmp_path / "doubles.parquet"
    pq.write_table(qcompress_table(pa.array([[0.1, 0.2]], pa.list_(pa.float64())), meta=meta), path)
    with pytest.raises(InputError) as err:
        read_embeddings(path)
    assert "wrong column type list<double>; expected fixed_size_list<float>[2]" in raises_at(err, path, None,
                                                                                                  "angles")

    as_uint8 = pa.FixedSizeListArray.from_arrays(pa.array([1, 2], pa.uint8()), 2)
    path = tmp_path / "uint8-says-float.parquet"
    pq.write_table(qcompress_table(as_uint8, meta=meta), path)
    with pytest.raises(InputError, match="wrong column type"):
        read_embeddings(path)

    nan = pa.FixedSizeListArray.from_arrays(pa.array([0.1, 0.2, 0.3, float("nan")], pa.float32()), 2)
    path = tmp_path / "nan.parquet"
    pq.write_table(qcompress_table(nan, meta=meta), path)
    with pytest.raises(InputError) as err:
        read_embeddings(path)
    assert 'row 2 (id "1")' in raises_at(err, path, None, "angles")
    with pytest.raises(InputError, match="NaN"):
        list(iter_embedding_batches(path))

    big = pa.FixedSizeListArray.from_arrays(pa.array([0.1, 7.0], pa.float32()), 2)
    path = tmp_path / "range.parquet"
    pq.write_table(qcompress_table(big, meta=meta), path)
    with pytest.raises(InputError, match=r"\[0, pi\]"):
        read_embeddings(path)

    fixed = pa.FixedSizeListArray.from_arrays(pa.array([0.1, 0.2], pa.float32()), 2)
    path = tmp_path / "column.parquet"
    pq.write_table(qcompress_table(fixed, meta=dict(meta, column="vectors")), path)
    with pytest.raises(InputError) as err:
        read_embeddings(path)
    raises_at(err, path, None, "vectors")


def test_range_error_names_the_row_and_id(tmp_path):
    meta = dict(META, dim=2, encoding="float32", column="angles")
    big = pa.FixedSizeListArray.from_arrays(pa.array([0.1, 0.2, 0.3, 0.4, 0.5, -0.5], pa.float32()), 2)
    path = tmp_path / "range.parquet"
    pq.write_table(qcompress_table(big, meta=meta), path, row_group_size=2)
    with pytest.raises(InputError) as err:
        read_embeddings(path)
    assert 'row 3 (id "2"): angles must be radians in [0, pi], found -0.5' in raises_at(err, path, None, "angles")


def test_null_id_names_the_row(tmp_path):
    meta = dict(META, dim=1, encoding="float32", column="angles")
    values = pa.FixedSizeListArray.from_arrays(pa.array([0.1, 0.2, 0.3], pa.float32()), 1)
    table = pa.table({"id": pa.array(["a", "b", None]), "angles": values})
    path = tmp_path / "null.parquet"
    pq.write_table(table.replace_schema_metadata({b"qcompress": json.dumps(meta)}), path)
    with pytest.raises(InputError) as err:
        read_embeddings(path)
    assert "row 3 has no id" in raises_at(err, path, None, "id")


def test_scan_embeddings_batches_and_codes(tmp_path):
    out = tmp_path / "emb8.parquet"
    values = angles(7, 3)
    ids = [f"d{i}" for i in range(7)]
    with EmbeddingWriter(out, dim=3, metadata=META, encoding="uint8", row_group_size=4) as writer:
        writer.write(ids, values)
    meta, batches = scan_embeddings(out, batch_rows=3, keep_codes=True)
    batches = list(batches)
    assert meta["encoding"] == "uint8"
    assert [(b.file, b.first_row, b.ids.to_pylist()) for b in batches] == [
        (out, 0, ids[:3]), (out, 3, ids[3:6]), (out, 6, ids[6:])
    ]
    codes = torch.cat([b.values for b in batches])
    assert codes.dtype == torch.uint8 and torch.equal(codes, quantize_angles(values))
    _, decoded = scan_embeddings(out)  # one batch per row group, codes decoded
    decoded = list(decoded)
    assert [len(b.ids) for b in decoded] == [4, 3]
    assert torch.equal(torch.cat([b.values for b in decoded]), dequantize_angles(codes))
    with pytest.raises(ValueError, match="batch_rows"):
        scan_embeddings(out, batch_rows=0)


def test_check_same_model():
    a = dict(META, dim=128, encoding="float32", qcompress_version="0.1.0")
    check_same_model(a, dict(a, encoding="uint8", qcompress_version="9.9"))
    check_same_model(dict(a, model_id="x"), a)  # model_id compared only when both have one
    with pytest.raises(InputError) as err:
        check_same_model(a, dict(a, similarity="cosine", dim=64), what="queries and documents")
    message = str(err.value)
    assert message.startswith('field "dim": queries and documents come from different models')
    assert "dim 128 vs 64" in message and 'similarity "fidelity" vs "cosine"' in message
    with pytest.raises(InputError, match="model_id"):
        check_same_model(dict(a, model_id="x"), dict(a, model_id="y"))


# -- low-bit code files ---------------------------------------------------------------------------------------


def write_codes(path, values, codec, *, ids=None, row_group_size=4, **kw):
    ids = ids or [f"d{i}" for i in range(len(values))]
    with EmbeddingWriter(path, dim=codec.dim, metadata=META, encoding="codes", codec=codec, levels_source="test",
                         row_group_size=row_group_size, **kw) as writer:
        writer.write(ids, values)
    return path


def test_write_read_low_bit_codes(tmp_path):
    values = angles(10, 13, seed=3)
    codec = AngleCodes.fit(values, 3)  # 13 x 3 = 39 bits: 5 bytes, one padding bit
    out = write_codes(tmp_path / "c3.parquet", values, codec)
    schema = pq.read_schema(out)
    assert schema.names == ["id", "codes"] and schema.field("codes").type == pa.binary(5)
    meta = read_metadata(schema.metadata)
    assert (meta["encoding"], meta["column"], meta["dim"]) == ("codes", "codes", 13)
    assert meta["codes"]["levels_source"] == "test" and AngleCodes.from_metadata(meta["codes"]) == codec
    emb = read_embeddings(out)  # decoded to the levels the codes name
    assert emb.codec == codec and torch.equal(emb.values, codec.decode(codec.encode(values)))
    meta, batches = scan_embeddings(out, batch_rows=3, keep_codes=True)
    batches = list(batches)
    assert [len(b.ids) for b in batches] == [3, 3, 3, 1] and all(b.codec == codec for b in batches)
    assert torch.equal(torch.cat([b.values for b in batches]), codec.encode(values))  # packed, as stored
    assert codec_of(meta) == codec and codec_of(dict(meta, encoding="float32")) is None


def test_a_reader_outside_qcompress_decodes_a_code_file(tmp_path):
    values = angles(6, 5, seed=4)
    codec = AngleCodes.fit(values, 2)
    out = write_codes(tmp_path / "c2.parquet", values, codec)
    table = pq.read_table(out)  # pyarrow and the metadata's description only
    meta = json.loads(table.schema.metadata[b"qcompress.codes"])
    b, d = meta["bits"], meta["dim"]
    rows = np.frombuffer(b"".join(table.column("codes").to_pylist()), np.uint8).reshape(len(table), -1)
    bits = np.unpackbits(rows, axis=1, bitorder="little")[:, : d * b].reshape(-1, d, b)
    decoded = np.array(meta["levels"], np.float32)[np.arange(d), (bits * (1 << np.arange(b))).sum(2)]
    assert np.array_equal(decoded, read_embeddings(out).values.numpy())


def code_table(path, column: pa.Array, codec, *, meta=None):
    meta = meta or dict(META, dim=codec.dim, encoding="codes", column="codes", codes=codec.to_metadata())
    pq.write_table(qcompress_table(column, meta=meta, column="codes"), path, row_group_size=2)
    return path


def test_a_corrupt_or_short_code_column_is_a_one_line_error(tmp_path):
    codec = AngleCodes.uniform(dim=13, bits=4)  # 7 bytes a row, the last byte's 4 high bits unused
    good = codec.encode(angles(5, 13, seed=5)).numpy()
    corrupt = good.copy()
    corrupt[3, -1] |= 0x80
    path = code_table(tmp_path / "corrupt.parquet", pa.array([r.tobytes() for r in corrupt], pa.binary(7)), codec)
    with pytest.raises(InputError) as err:
        read_embeddings(path)
    message = raises_at(err, path, None, "codes")
    assert 'row 4 (id "3") sets unused bits of its last byte: not 4-bit codes of 13 qubits' in message
    assert "\n" not in message
    short = pa.array([r[:6].tobytes() for r in good], pa.binary(6))
    path = code_table(tmp_path / "short.parquet", short, codec)
    with pytest.raises(InputError) as err:
        read_embeddings(path)
    message = raises_at(err, path, None, "codes")
    assert "wrong column type fixed_size_binary[6]; expected fixed_size_binary[7] for 4-bit codes of 13 qubits" in message
    # Variable-width binary (what pandas and DuckDB write back) reads when every row has 7 bytes, and names the row
    # that has not.
    for binary in (pa.binary(), pa.large_binary()):
        path = code_table(tmp_path / "binary.parquet", pa.array([r.tobytes() for r in good], binary), codec)
        assert torch.equal(read_embeddings(path).values, codec.decode(torch.from_numpy(good)))
        rows = [r.tobytes() for r in good[:2]] + [good[2, :6].tobytes()]
        path = code_table(tmp_path / "binary.parquet", pa.array(rows, binary), codec)
        with pytest.raises(InputError) as err:
            read_embeddings(path)
        assert raises_at(err, path, None, "codes").endswith('row 3 (id "2") has 6 bytes; every row needs 7')
    null = pa.array([good[0].tobytes(), None], pa.binary(7))
    path = code_table(tmp_path / "null.parquet", null, codec)
    with pytest.raises(InputError) as err:
        read_embeddings(path)
    assert 'row 2 (id "1") has no codes (null)' in raises_at(err, path, None, "codes")
    column = pa.array([r.tobytes() for r in good], pa.binary(7))
    meta = dict(META, dim=12, encoding="codes", column="codes", codes=codec.to_metadata())
    with pytest.raises(InputError) as err:
        read_embeddings(code_table(tmp_path / "dim.parquet", column, codec, meta=meta))
    assert "the codes describe 13 qubits, but dim is 12" in str(err.value)
    broken = dict(codec.to_metadata(), levels=[[0.0]])
    meta = dict(META, dim=13, encoding="codes", column="codes", codes=broken)
    with pytest.raises(InputError) as err:
        read_embeddings(code_table(tmp_path / "levels.parquet", column, codec, meta=meta))
    assert raises_at(err, tmp_path / "levels.parquet", None, "codes.levels")
    meta = dict(META, dim=13, encoding="codes", column="angles", codes=codec.to_metadata())
    with pytest.raises(InputError, match="stored in the column `codes`"):
        read_embeddings(code_table(tmp_path / "column.parquet", column, codec, meta=meta))


def test_files_coded_with_other_levels_are_other_files(tmp_path):
    values = angles(8, 6, seed=6)
    fitted, uniform = AngleCodes.fit(values, 4), AngleCodes.uniform(6, 4)
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_codes(folder / "a.parquet", values[:4], fitted, ids=["a", "b", "c", "d"])
    write_codes(folder / "b.parquet", values[4:], uniform, ids=["e", "f", "g", "h"])
    with pytest.raises(InputError, match="metadata differs from a.parquet"):
        read_embeddings(folder)
    a, b = (read_embedding_metadata(folder / name) for name in ("a.parquet", "b.parquet"))
    with pytest.raises(InputError) as err:
        check_same_model(a, b)
    assert str(err.value).startswith('field "codes": the two embedding files are coded differently (4-bit codes '
                                     "with other levels)")
    plain = dict(META, dim=6, encoding="float32", column="angles")
    check_same_model(plain, a)  # float32 queries against codes: the asymmetric score
    check_same_model(a, dict(b, codes=a["codes"]))


def test_the_writer_codes_angles_and_resumes_with_the_same_codec(tmp_path):
    values = angles(9, 7, seed=7)
    codec = AngleCodes.fit(values, 5)
    out = tmp_path / "c5.parquet"
    writer = EmbeddingWriter(out, dim=7, metadata=META, encoding="codes", codec=codec, levels_source="test",
                             row_group_size=4)
    writer.write([f"d{i}" for i in range(5)], values[:5])
    writer.abort()  # an interrupted run: one finished part of 4 rows, and one of 1
    assert AngleCodes.from_metadata(earlier_metadata(out)["codes"]) == codec
    with pytest.raises(InputError, match="cannot resume"):
        EmbeddingWriter(out, dim=7, metadata=META, encoding="codes", codec=AngleCodes.uniform(7, 5),
                        levels_source="test", resume=True)
    with EmbeddingWriter(out, dim=7, metadata=META, encoding="codes", codec=codec, levels_source="test",
                         row_group_size=4, resume=True) as writer:
        assert writer.rows_written == 5
        writer.write([f"d{i}" for i in range(5, 9)], values[5:])
    assert torch.equal(read_embeddings(out).values, codec.decode(codec.encode(values)))
    assert earlier_metadata(out) is None
    for kwargs, words in [({"codec": codec}, "a codec goes with encoding='codes'"),
                          ({"encoding": "codes"}, "needs the codec of the 7 qubits"),
                          ({"encoding": "codes", "codec": codec, "column": "vectors"}, "outputs cosine vectors"),
                          ({"encoding": "codes", "codec": AngleCodes.uniform(6, 5)}, "needs the codec of the 7")]:
        with pytest.raises(ValueError, match=words):
            EmbeddingWriter(tmp_path / "bad.parquet", dim=7, metadata=META, **kwargs)
    with pytest.raises(ValueError, match=r"radians in \[0, pi\]"):
        write_codes(tmp_path / "range.parquet", values + 4, codec)


# -- TREC runs and qrels ---------------------------------------------------------------------------------------


def test_write_run_order_ties_topk_and_round_trip(tmp_path):
    run = {"10": {"b": 0.5, "a": 0.5, "c": 0.9, "d": -1.25}, "2": {"x": 1 / 3}}
    out = tmp_path / "runs" / "run.trec"
    write_run(out, run, "qc-test")
    lines = out.read_text().splitlines()
    assert lines == [
        f"2 Q0 x 1 {1 / 3!r} qc-test",
        "10 Q0 c 1 0.9 qc-test",
        "10 Q0 a 2 0.5 qc-test",
        "10 Q0 b 3 0.5 qc-test",
        "10 Q0 d 4 -1.25 qc-test",
    ]
    assert read_run(out) == run
    stream = io.StringIO()
    write_run(stream, run, "t", top_k=2)
    assert [line.split()[2] for line in stream.getvalue().splitlines()] == ["x", "c", "a"]


def test_write_run_rejects_bad_values_without_touching_the_file(tmp_path):
    out = tmp_path / "run.trec"
    out.write_text("old\n")
    with pytest.raises(ValueError, match="finite"):
        write_run(out, {"1": {"a": float("nan")}}, "t")
    with pytest.raises(ValueError, match="tag"):
        write_run(out, {"1": {"a": 1.0}}, "two words")
    with pytest.raises(ValueError, match="whitespace"):
        write_run(out, {"1": {"a b": 1.0}}, "t")
    assert out.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [out]  # no temporary files left behind


@pytest.mark.parametrize(
    "content, line, field, words",
    [
        ("1 Q0 a 1 0.5 t\n1 Q0 b 2 0.4\n", 2, None, "expected 6"),
        ("1 Q0 a 1 high t\n", 1, "score", "not a finite number"),
        ("1 Q0 a 1 nan t\n", 1, "score", "not a finite number"),
        ("1 Q0 a 1 0.5 t\n\n1 Q0 a 2 0.4 t\n", 3, "docid", "first on line 1"),
    ],
)
def test_read_run_errors(tmp_path, content, line, field, words):
    path = write(tmp_path, "run.trec", content)
    with pytest.raises(InputError) as err:
        read_run(path)
    assert words in raises_at(err, path, line, field)


def test_read_qrels_trec_and_beir(tmp_path):
    trec = write(tmp_path, "qrels.txt", "1 0 d1 2\n1 0 d2 0\n\n2 Q0 d1 1\n1 0 d1 2\n")
    assert read_qrels(trec) == {"1": {"d1": 2, "d2": 0}, "2": {"d1": 1}}
    beir = write(tmp_path, "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t-1\nq2\td3\t2.0\n")
    assert read_qrels(beir) == {"q1": {"d1": 1, "d2": -1}, "q2": {"d3": 2}}
    headerless = write(tmp_path, "plain.tsv", "q1\td1\t1\n")
    assert read_qrels(headerless) == {"q1": {"d1": 1}}


@pytest.mark.parametrize(
    "content, line, field, words",
    [
        ("1 0 d1 2\n1 0 d2\n", 2, None, "expected 4"),
        ("1 0 d1\n1 0 d2 1\n", 1, "score", "`query-id corpus-id score`"),
        ("q\td\t1\n1 0 d2 1\n", 2, None, "expected 3"),
        ("1 d1\n", 1, None, "TREC qrels"),
        ("1 0 d1 high\n", 1, "rel", "not an integer"),
        ("query-id\tcorpus-id\tscore\nq\td\t0.5\n", 2, "score", "not an integer"),
        ("1 0 d1 2\n1 0 d1 1\n", 2, None, "line 1"),
    ],
)
def test_read_qrels_errors(tmp_path, content, line, field, words):
    path = write(tmp_path, "qrels.txt", content)
    with pytest.raises(InputError) as err:
        read_qrels(path)
    assert words in raises_at(err, path, line, field)


# -- the writer's parts and journal, compact duplicate checks --------------------------------------------------


def test_the_output_is_what_one_plain_pyarrow_write_of_the_same_rows_gives(tmp_path):
    """Every byte through pyarrow: the parts are finished chunks in the folder until close(), and the output is
    byte for byte what `pyarrow.parquet.write_table` writes for the same rows, row groups and metadata."""
    out = tmp_path / "emb.parquet"
    values, ids, texts = angles(10, 3), [f"d{i}" for i in range(10)], [f"text {i}" for i in range(10)]
    with EmbeddingWriter(out, dim=3, metadata=META, row_group_size=4, texts=True) as writer:
        writer.write(ids, values, texts=texts)
        assert sorted(p.name for p in partial_path(out).iterdir()) == [
            "journal.jsonl", "lock", "part-000001.arrow", "part-000002.arrow"]  # 2 rows still buffered
    table = pa.Table.from_arrays(
        [pa.array(ids), pa.FixedSizeListArray.from_arrays(pa.array(values.numpy().reshape(-1)), 3), pa.array(texts)],
        schema=writer.schema)
    plain = tmp_path / "plain.parquet"
    pq.write_table(table, plain, row_group_size=4, write_statistics=["id", "angles.list.element"])
    assert out.read_bytes() == plain.read_bytes()
    info = pq.ParquetFile(out).metadata
    assert [info.row_group(i).num_rows for i in range(info.num_row_groups)] == [4, 4, 2]
    emb = read_embeddings(out, texts=True)
    assert emb.ids == ids and torch.equal(emb.values, values) and emb.texts == texts
    pd = pytest.importorskip("pandas")
    assert list(pd.read_parquet(out)["text"]) == emb.texts


def test_resume_drops_a_journalled_part_that_is_not_on_disk_whole(tmp_path):
    """A crash can lose a part's rename while its journal line survives: that part and those after it go."""
    out = tmp_path / "emb.parquet"
    values = angles(6, 2)
    with pytest.raises(KeyboardInterrupt):
        with EmbeddingWriter(out, dim=2, metadata=META, row_group_size=2) as writer:
            writer.write([f"d{i}" for i in range(6)], values)
            raise KeyboardInterrupt
    (partial_path(out) / "part-000002.arrow").unlink()
    with EmbeddingWriter(out, dim=2, metadata=META, row_group_size=2, resume=True) as writer:
        assert writer.rows_written == 2 and writer.last_id == "d1"
        assert not (partial_path(out) / "part-000003.arrow").exists()
        writer.write([f"d{i}" for i in range(2, 6)], values[2:])
    emb = read_embeddings(out)
    assert emb.ids == [f"d{i}" for i in range(6)] and torch.equal(emb.values, values)


@pytest.mark.parametrize("leftover", ["format 2", "format 1"])
def test_a_folder_left_by_an_older_qcompress_is_refused_in_one_line(tmp_path, leftover):
    """Format 2 was one data file and a journal of its row groups; format 1 a folder of Parquet parts."""
    out = tmp_path / "emb.parquet"
    folder = partial_path(out)
    folder.mkdir()
    if leftover == "format 2":
        (folder / "data").write_bytes(b"PAR1")
        (folder / "journal.jsonl").write_text(json.dumps({"format": 2, "metadata": META, "columns": ["id"]}) + "\n")
        words = "its resume journal has format 2, this version writes format 3"
    else:
        pq.write_table(pa.table({"id": ["a"]}), folder / "part-000000.parquet")
        words = "it holds no resume journal"
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(InputError) as err:
        EmbeddingWriter(out, dim=2, metadata=META, resume=True)
    message = raises_at(err, folder, None)
    assert "another qcompress version" in message and words in message and "delete the folder" in message
    assert "\n" not in message
    assert sorted(p.name for p in folder.iterdir()) == sorted(before + ["lock"])  # untouched but for the lock
    with EmbeddingWriter(out, dim=2, metadata=META) as writer:  # without resume: starts over
        writer.write(["a"], angles(1, 2))
    assert read_embeddings(out).ids == ["a"] and not folder.exists()


def test_unique_ids_are_exact_when_hashes_collide(monkeypatch):
    import qcompress.formats.ids as ids_module
    from qcompress.formats import UniqueIds

    monkeypatch.setattr(ids_module, "hash", lambda s: 7, raising=False)  # every id has the same hash
    seen = UniqueIds()
    assert seen.add(["a", "b"], [1, 2]) is None and seen.add(["c"], [3]) is None
    assert seen.add(["d", "b"], [4, 5]) == (1, 2)
    assert seen.add(["e", "e"], [6, 7]) == (1, 6)
    assert len(seen) == 3


def test_unique_ids_over_many_batches_find_the_first_repeat():
    from qcompress.formats import UniqueIds

    seen = UniqueIds()
    for start in range(0, 5000, 100):
        assert seen.add([f"id{i}" for i in range(start, start + 100)], range(start, start + 100)) is None
    assert seen.add(["new", "id4321", "id17"], [9000, 9001, 9002]) == (1, 4321)
    assert seen.nbytes < 60 * len(seen)  # compact: ~32 bytes plus the id per row
