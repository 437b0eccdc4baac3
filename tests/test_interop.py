"""Files that survive other tools (issue 28): DataFrame round trips through pandas, polars and DuckDB, `meta copy`,
list columns read by score / search / index, and the readable metadata keys."""

from __future__ import annotations

import json

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from qcompress.cli import app
from qcompress.formats import read_embedding_metadata, read_embeddings
from qcompress.model import build_model

runner = CliRunner()

DOCS = {f"d{i}": text for i, text in enumerate([
    "the flow on a wing", "heat transfer in a boundary layer", "pressure of the flow", "what are the boundary layer",
    "a wing", "heat of the wing at pressure", "lift and drag", "the layer of heat", "flow at the wing tip",
    "boundary pressure", "drag on the wing", "what is heat"])}
QUERIES = {"q1": "wing flow", "q2": "heat transfer", "q3": "boundary layer pressure"}


def jsonl(path, records):
    path.write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in records.items()))
    return path


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def files(tiny_encoder, tmp_path_factory):
    """A quantum model, its query file and its corpus as float32, uint8 and 4-bit codes."""
    root = tmp_path_factory.mktemp("interop")
    build_model(tiny_encoder, head="quantum", dim=16, max_length=64).save(root / "qbec")
    model = root / "qbec"
    invoke("compress", jsonl(root / "q.jsonl", QUERIES), "--model", model, "--role", "query", "-o", root / "q.parquet")
    corpus = jsonl(root / "c.jsonl", DOCS)
    for name, extra in (("float32", []), ("uint8", ["--uint8"]), ("codes", ["--bits", "4"])):
        invoke("compress", corpus, "--model", model, "-o", root / f"{name}.parquet", *extra)
    return root


def round_trip(tool: str, source, out, keep=lambda ids: [True] * len(ids)):
    """What a user does in `tool`: read the file, keep some rows, write it back (without qcompress's metadata)."""
    if tool == "pandas":
        frame = pd.read_parquet(source)
        frame[keep(list(frame["id"]))].to_parquet(out)
    elif tool == "polars":
        frame = pl.read_parquet(source)
        frame.filter(pl.Series(keep(frame["id"].to_list()))).write_parquet(out)
    else:
        ids = [i for i, k in zip(pq.read_table(source, columns=["id"])["id"].to_pylist(),
                                 keep(pq.read_table(source, columns=["id"])["id"].to_pylist())) if k]
        listed = ", ".join(f"'{i}'" for i in ids)
        duckdb.sql(f"COPY (SELECT * FROM '{source}' WHERE id IN ({listed})) TO '{out}' (FORMAT parquet)")
    return out


@pytest.mark.parametrize("tool", ["pandas", "polars", "duckdb"])
@pytest.mark.parametrize("encoding", ["float32", "uint8", "codes"])
def test_a_dataframe_round_trip_and_meta_copy_score_as_the_original(files, tmp_path, tool, encoding):
    original = files / f"{encoding}.parquet"
    copy = round_trip(tool, original, tmp_path / "copy.parquet")
    assert not any(key.startswith(b"qcompress") for key in (pq.read_schema(copy).metadata or {}))
    refused = runner.invoke(app, ["score", str(files / "q.parquet"), str(copy)])
    assert refused.exit_code == 1 and "qcompress meta copy ORIGINAL.parquet THIS.parquet" in refused.stderr

    result = invoke("meta", "copy", original, copy)
    assert f"{len(DOCS)} of the {len(DOCS)} rows" in result.stderr
    assert read_embedding_metadata(copy) == read_embedding_metadata(original)
    expected = invoke("score", files / "q.parquet", original, "--top-k", "5").stdout
    assert invoke("score", files / "q.parquet", copy, "--top-k", "5").stdout == expected

    # A filtered copy: the same run, less the documents left out (every document ranked, so no other moves up).
    kept = tmp_path / "kept.parquet"
    round_trip(tool, original, kept, keep=lambda ids: [i not in ("d0", "d4") for i in ids])
    result = invoke("meta", "copy", original, kept, "-o", tmp_path / "restored.parquet")
    assert f"{len(DOCS) - 2} of the {len(DOCS)} rows" in result.stderr
    whole = invoke("score", files / "q.parquet", original, "--top-k", str(len(DOCS))).stdout
    part = invoke("score", files / "q.parquet", tmp_path / "restored.parquet", "--top-k", str(len(DOCS))).stdout
    assert [line.split()[::2] for line in part.splitlines()] == [  # qid, docid, score: ranks shift
        f[::2] for f in (line.split() for line in whole.splitlines()) if f[2] not in ("d0", "d4")]


def test_the_metadata_is_split_into_readable_keys(files):
    meta = pq.read_schema(files / "uint8.parquet").metadata
    assert json.loads(meta[b"qcompress.encoding"]) == "uint8" and json.loads(meta[b"qcompress.dim"]) == 16
    assert json.loads(meta[b"qcompress.scale"]) == pytest.approx(3.141592653589793 / 255)
    assert json.loads(meta[b"qcompress.score"]).startswith("log-fidelity(q, d) = sum over qubits i of log(cos^2(")
    assert json.loads(meta[b"qcompress.model_ref"]) == {"folder": str((files / "qbec").resolve())}
    assert len(json.loads(meta[b"qcompress.model_id"])) == 32  # the weights digest: the model's identity
    codes = pq.read_schema(files / "codes.parquet").metadata
    assert len(json.loads(codes[b"qcompress.codes"])["levels"]) == 16 and b"qcompress.scale" not in codes
    # DuckDB reads the keys as they are.
    rows = duckdb.sql(f"SELECT key, value FROM parquet_kv_metadata('{files / 'uint8.parquet'}')").fetchall()
    assert (b"qcompress.head", b'"quantum"') in rows
    shown = json.loads(invoke("meta", "show", files / "uint8.parquet").stdout)
    assert shown == read_embedding_metadata(files / "uint8.parquet") and shown["encoding"] == "uint8"


def test_meta_copy_refuses_rows_the_source_does_not_have(files, tmp_path):
    original = files / "float32.parquet"
    table = pq.read_table(original)
    cases = {
        "changed": (table.set_column(1, "angles", pa.array(
            [[0.5] * 16] + table["angles"].to_pylist()[1:], pa.list_(pa.float32()))),
            'row 1 (id "d0"): its values differ from the source\'s row with that id'),
        "foreign": (table.set_column(0, "id", pa.array(["x"] + table["id"].to_pylist()[1:])),
                    'row 1 (id "x") is not in'),
        "duplicate": (pa.concat_tables([table, table.slice(0, 1)]), 'duplicate id "d0" in row 13 (first in row 1)'),
        "short": (table.set_column(1, "angles", pa.array([[0.5] * 15] + table["angles"].to_pylist()[1:],
                                                         pa.list_(pa.float32()))),
                  'row 1 (id "d0") has 15 values; every row needs 16'),
        "doubles": (table.set_column(1, "angles", table["angles"].cast(pa.list_(pa.float64()))),
                    "wrong column type list<double>; the source stores float32 angles as fixed_size_list<float>[16]"),
        "no-column": (table.rename_columns(["id", "values"]), "has no `angles` column"),
    }
    for name, (rows, message) in cases.items():
        copy = tmp_path / f"{name}.parquet"
        pq.write_table(rows.replace_schema_metadata(None), copy)
        before = copy.read_bytes()
        result = runner.invoke(app, ["meta", "copy", str(original), str(copy)])
        assert result.exit_code == 1 and message in result.stderr, (name, result.stderr)
        assert result.stderr.count("\n") == 1 and copy.read_bytes() == before  # nothing written


def test_score_search_and_index_read_list_columns(files, tmp_path):
    """A file whose fixed-size lists became `list<float>` / `large_list<float>` (metadata kept) reads as before."""
    original = files / "float32.parquet"
    table = pq.read_table(original)
    expected = invoke("score", files / "q.parquet", original, "--top-k", "4").stdout
    for lists in (pa.list_(pa.float32()), pa.large_list(pa.float32())):
        listed = tmp_path / "listed.parquet"
        pq.write_table(table.set_column(1, "angles", table["angles"].cast(lists)), listed)
        assert pq.read_schema(listed).field("angles").type == lists
        assert invoke("score", files / "q.parquet", listed, "--top-k", "4").stdout == expected
        hits = invoke("search", "wing flow", "--corpus", listed, "--model", files / "qbec", "--json").stdout
        assert len(hits.splitlines()) == 10
        invoke("index", "build", listed, "-o", tmp_path / "listed.index", "--nlist", "2", "--force")
    bad = tmp_path / "bad.parquet"
    rows = table["angles"].to_pylist()
    pq.write_table(table.set_column(1, "angles", pa.array(rows[:5] + [rows[5][:3]] + rows[6:],
                                                          pa.list_(pa.float32()))), bad)
    result = runner.invoke(app, ["score", str(files / "q.parquet"), str(bad)])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert f'{bad}: field "angles": row 6 (id "d5") has 3 values; every row needs 16' in result.stderr


def test_old_files_with_one_json_value_still_read(files, tmp_path):
    original = files / "float32.parquet"
    table = pq.read_table(original)
    meta = read_embedding_metadata(original)
    old = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata({b"qcompress": json.dumps(meta)}), old)
    assert read_embedding_metadata(old) == meta and read_embeddings(old).ids == list(DOCS)
    expected = invoke("score", files / "q.parquet", original, "--top-k", "3").stdout
    assert invoke("score", files / "q.parquet", old, "--top-k", "3").stdout == expected


def test_compress_reads_csv_parquet_and_named_fields(files, tmp_path):
    """The same texts as JSONL (`_id`, `text`), CSV and Parquet (Pyserini's `docid`, `contents`): the same file."""
    model, expected = files / "qbec", read_embeddings(files / "float32.parquet")
    (tmp_path / "c.csv").write_text("docid,contents\n" + "".join(f'{k},"{v}"\n' for k, v in DOCS.items()))
    pq.write_table(pa.table({"docid": list(DOCS), "contents": list(DOCS.values())}), tmp_path / "c.parquet")
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"docid": k, "contents": v}) + "\n" for k, v in DOCS.items()))
    for source in ("c.csv", "c.parquet", "c.jsonl"):
        out = tmp_path / f"out-{source}.parquet"
        invoke("compress", tmp_path / source, "--model", model, "-o", out, "--id-field", "docid", "--text-field",
               "contents")
        got = read_embeddings(out)
        assert got.ids == expected.ids and (got.values == expected.values).all(), source
    result = runner.invoke(app, ["compress", str(tmp_path / "c.csv"), "--model", str(model), "-o",
                                 str(tmp_path / "x.parquet")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert f'{tmp_path / "c.csv"}:2: field "_id": missing id' in result.stderr
    assert not (tmp_path / "x.parquet").exists()
