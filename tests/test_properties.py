"""Property-based tests (hypothesis) of the readers at qcompress's edges (issue 14): arbitrary bytes and records
never give a traceback (only `InputError`), never come back as rows that differ from the input, and accepted
input round-trips. Derandomized: the same examples on every run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qcompress.errors import InputError
from qcompress.formats import EmbeddingWriter, read_embeddings, read_texts
from qcompress.formats.embeddings import ANGLE_TOLERANCE
from qcompress.quantization import dequantize_angles

SETTINGS = settings(derandomize=True, deadline=None, max_examples=150,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
META = {"encoder": "x", "head": "none", "similarity": "fidelity"}

# Lines built from the characters that matter to the readers, so that short examples hit the edge cases.
LINE_BYTES = st.lists(st.sampled_from([b"a", b"1", b" ", b"\t", b"\r", b"{", b"}", b'"', b":", b",", b"_id",
                                       b"id", b"text", b"title", b"\xc3\xa9", b"\xff", b"\xef\xbb\xbf", b"null"]),
                      max_size=12).map(b"".join)
FILE_BYTES = st.one_of(st.binary(max_size=200), st.lists(LINE_BYTES, max_size=6).map(b"\n".join))


def tsv_oracle(data: bytes) -> list[tuple[str, str]] | None:
    """What the TSV format says `data` holds (README, formats/texts.py), or None when it is not valid TSV."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    records, seen, first = [], set(), True
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r\n")
        if number == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            return None
        doc_id, body = fields[0].strip(), fields[1].strip()
        if first and doc_id.lower() in ("id", "_id") and body.lower() == "text":
            first = False
            continue
        first = False
        if not doc_id or any(c.isspace() for c in doc_id) or not body or doc_id in seen:
            return None
        seen.add(doc_id)
        records.append((doc_id, body))
    return records


@SETTINGS
@given(data=FILE_BYTES)
@example(data=b"1\tfirst\textra column\n")  # main folded the third field into the text (issue 14 item 16)
@example(data=b"\xef\xbb\xbfid\ttext\r\n1\tx\r\n2\ty")
@example(data=b"1\tx\n\n1\ty\n")
def test_arbitrary_bytes_as_tsv_give_the_format_s_records_or_an_input_error(tmp_path, data):
    path = tmp_path / "in.tsv"
    path.write_bytes(data)
    expected = tsv_oracle(data)
    try:
        got = read_texts(path)
    except InputError:
        assert expected is None, f"refused valid input {data!r}"
        return
    assert got == expected


@SETTINGS
@given(data=FILE_BYTES)
def test_arbitrary_bytes_as_jsonl_give_input_error_or_records_found_in_the_input(tmp_path, data):
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    try:
        got = read_texts(path)
    except InputError:
        return
    lines = [json.loads(line) for line in data.decode("utf-8").lstrip("\ufeff").split("\n") if line.strip()]
    assert len(got) == len(lines)
    for (doc_id, text), record in zip(got, lines):
        raw_id = record["_id"] if "_id" in record else record["id"]
        assert doc_id == str(raw_id).strip()
        title = record.get("title")
        assert text == ((title + " " + record["text"]) if title is not None else record["text"]).strip()
    assert len({doc_id for doc_id, _ in got}) == len(got)


ID = st.text(st.characters(blacklist_categories=["Cs", "Zs", "Cc", "Zl", "Zp"]), min_size=1, max_size=8).filter(
    lambda s: s.strip() == s and not any(c.isspace() for c in s))
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=30).filter(lambda s: s.strip())


@SETTINGS
@given(records=st.lists(st.tuples(ID, TEXT), max_size=8, unique_by=lambda r: r[0]), as_jsonl=st.booleans())
def test_valid_records_round_trip(tmp_path, records, as_jsonl):
    if as_jsonl:
        path = tmp_path / "in.jsonl"
        path.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in records), encoding="utf-8")
        expected = [(i, t.strip()) for i, t in records]
    else:
        records = [(i, t.replace("\t", " ").replace("\n", " ").replace("\r", " ")) for i, t in records]
        records = [(i, t) for i, t in records if t.strip()]
        path = tmp_path / "in.tsv"
        path.write_text("".join(f"{i}\t{t}\n" for i, t in records), encoding="utf-8")
        expected = tsv_oracle(path.read_bytes())
        assert expected is not None
    assert read_texts(path) == expected


# -- the embedding Parquet reader ------------------------------------------------------------------------------


@SETTINGS
@given(data=st.one_of(st.binary(max_size=300), st.binary(max_size=200).map(lambda b: b"PAR1" + b + b"PAR1")))
def test_arbitrary_bytes_as_an_embedding_file_are_an_input_error(tmp_path, data):
    path = tmp_path / "e.parquet"
    path.write_bytes(data)
    with pytest.raises(InputError):
        read_embeddings(path)


VALUE = st.one_of(st.floats(-1.0, 4.0, width=32), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, math.pi]))


@st.composite
def tables(draw):
    """(ids, rows, encoding) of a small embedding table: ids may be null or repeat, values anything."""
    dim = draw(st.integers(1, 3))
    n = draw(st.integers(0, 6))
    ids = draw(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])), min_size=n,
                        max_size=n))
    encoding = draw(st.sampled_from(["float32", "uint8"]))
    if encoding == "uint8":
        rows = draw(st.lists(st.lists(st.integers(0, 255), min_size=dim, max_size=dim), min_size=n, max_size=n))
    else:
        rows = draw(st.lists(st.lists(VALUE, min_size=dim, max_size=dim), min_size=n, max_size=n))
    return ids, rows, encoding, dim


def valid(ids, rows, encoding) -> bool:
    if any(i is None for i in ids) or len(set(ids)) != len(ids):
        return False
    if encoding == "uint8":
        return True
    flat = np.asarray(rows, dtype=np.float32).reshape(-1)
    return bool(np.isfinite(flat).all() and (flat >= -ANGLE_TOLERANCE).all()
                and (flat <= math.pi + ANGLE_TOLERANCE).all())


@SETTINGS
@given(table=tables(), group=st.integers(1, 4))
def test_embedding_records_are_read_exactly_or_refused(tmp_path, table, group):
    ids, rows, encoding, dim = table
    kind = pa.uint8() if encoding == "uint8" else pa.float32()
    flat = pa.array([v for row in rows for v in row], kind)
    arrow = pa.table({"id": pa.array(ids, pa.string()), "angles": pa.FixedSizeListArray.from_arrays(flat, dim)})
    meta = dict(META, dim=dim, encoding=encoding, column="angles")
    path = tmp_path / "e.parquet"
    pq.write_table(arrow.replace_schema_metadata({b"qcompress": json.dumps(meta)}), path, row_group_size=group)
    try:
        emb = read_embeddings(path)
    except InputError:
        assert not valid(ids, rows, encoding), "refused a valid file"
        return
    assert valid(ids, rows, encoding), "accepted an invalid file"
    assert emb.ids == ids
    stored = np.asarray(rows, dtype=np.uint8 if encoding == "uint8" else np.float32).reshape(len(rows), dim)
    expected = dequantize_angles(stored) if encoding == "uint8" else stored
    assert np.array_equal(emb.values.numpy(), expected)


@SETTINGS
@given(n=st.integers(0, 12), dim=st.integers(1, 5), group=st.integers(1, 5), uint8=st.booleans(),
       seed=st.integers(0, 2**16))
def test_written_embeddings_round_trip(tmp_path, n, dim, group, uint8, seed):
    values = torch.rand(n, dim, generator=torch.Generator().manual_seed(seed)) * math.pi
    ids = [f"r{i}" for i in range(n)]
    path = tmp_path / f"w{seed}-{n}-{dim}-{group}-{uint8}.parquet"
    with EmbeddingWriter(path, dim=dim, metadata=META, encoding="uint8" if uint8 else "float32",
                         row_group_size=group) as writer:
        for start in range(0, n, 3):
            writer.write(ids[start : start + 3], values[start : start + 3])
    emb = read_embeddings(path)
    assert emb.ids == ids
    if uint8:
        assert (emb.values - values).abs().max() <= math.pi / 255 / 2 + 1e-6 if n else emb.values.numel() == 0
    else:
        assert torch.equal(emb.values, values)
    assert pq.ParquetFile(path).metadata.num_row_groups == max(1, math.ceil(n / group))  # empty: one empty group


# -- the approximate index's reader (issue 27) -------------------------------------------------------------------

JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2, 2**40), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
INDEX_FIELDS = [("format",), ("metadata",), ("metadata", "dim"), ("metadata", "encoding"), ("metadata", "column"),
                ("metadata", "similarity"), ("rows",), ("nlist",), ("ids_digest",), ("source",), ("source", "path"),
                ("source", "rows"), ("source", "footer_digest"), ("extra",)]


@pytest.fixture(scope="module")
def built_index(tmp_path_factory):
    """An index of 300 clustered rows and the ranking its search gives (the reference for every mutation)."""
    from qcompress.search.approximate import ApproximateIndex, build_index

    root = tmp_path_factory.mktemp("index")
    g = torch.Generator().manual_seed(0)
    corpus = (torch.rand(6, 4, generator=g) * math.pi)[torch.randint(0, 6, (300,), generator=g)]
    corpus = (corpus + 0.1 * torch.randn(300, 4, generator=g)).clamp(0, math.pi)
    with EmbeddingWriter(root / "c.parquet", dim=4, metadata=META) as writer:
        writer.write([f"d{i}" for i in range(300)], corpus)
    build_index(root / "c.parquet", root / "c.index", nlist=4)
    return root / "c.index", corpus[:3], ApproximateIndex(root / "c.index").search(corpus[:3], 5, nprobe=4)


def _copy_index(folder, tmp_path):
    import shutil
    import tempfile

    return shutil.copytree(folder, tempfile.mkdtemp(dir=tmp_path) + "/i")


def _opens_the_same_or_refuses(folder, queries, reference) -> bool:
    """The index at `folder` either refuses to open (InputError) or searches exactly as the reference did; whether
    it opened."""
    from qcompress.search.approximate import ApproximateIndex

    try:
        index = ApproximateIndex(folder)
    except InputError:
        return False
    scores, ids = index.search(queries, 5, nprobe=4)
    assert ids == reference[1] and torch.equal(scores, reference[0])
    return True


@SETTINGS
@given(field=st.sampled_from(INDEX_FIELDS), value=st.one_of(st.just("<deleted>"), JSON_VALUE))
def test_an_altered_index_description_is_refused_or_searches_as_built(tmp_path, built_index, field, value):
    folder, queries, reference = built_index
    copy = _copy_index(folder, tmp_path)
    info = json.loads((folder / "index.json").read_text())
    parent = info
    for key in field[:-1]:
        parent = parent[key]
    if value == "<deleted>":
        parent.pop(field[-1], None)
    else:
        parent[field[-1]] = value
    (Path(copy) / "index.json").write_text(json.dumps(info))
    opened = _opens_the_same_or_refuses(copy, queries, reference)
    if value == "<deleted>" and field not in (("metadata", "column"), ("metadata", "similarity"), ("nlist",), ("extra",)):
        assert not opened, f"an index.json without {'.'.join(field)} was used"


@SETTINGS
@given(name=st.sampled_from(["index.json", "ids.arrow", "values.npy", "ivf.faiss"]), at=st.floats(0, 1),
       how=st.sampled_from(["truncate", "flip", "append"]))
@example(name="ids.arrow", at=0.5, how="flip")
@example(name="values.npy", at=0.5, how="truncate")
def test_damaged_index_files_are_refused_or_search_as_built(tmp_path, built_index, name, at, how):
    """Any change to index.json or ids.arrow, and any truncation, is refused or harmless; a flipped byte in the
    data of values.npy or ivf.faiss is not looked for (reading them whole on every open would cost more than the
    searches: qcompress.search.approximate's docstring), so only those two are exempt from 'refused'."""
    folder, queries, reference = built_index
    copy = Path(_copy_index(folder, tmp_path))
    data = bytearray((copy / name).read_bytes())
    position = min(len(data) - 1, int(at * len(data)))
    if how == "truncate":
        data = data[:position]
    elif how == "flip":
        data[position] ^= 0x41
    else:
        data += b"\0"
    if name == "ivf.faiss" and how != "truncate":
        return  # faiss reads its own format without checks: a flipped size field can ask it for any memory
    (copy / name).write_bytes(bytes(data))
    try:
        opened = _opens_the_same_or_refuses(copy, queries, reference)
    except AssertionError:
        assert name == "values.npy" and how == "flip", f"{how} of {name} changed the search silently"
        return
    if name == "ids.arrow" or (how == "truncate" and name != "index.json"):
        assert not opened, f"{how} of {name} was not refused"


# -- the caches' readers (issue 27) ------------------------------------------------------------------------------

DAMAGE = dict(at=st.floats(0, 1), how=st.sampled_from(["truncate", "flip", "append", "zero"]),
              bit=st.integers(0, 7))


def _damage(path, at, how, bit) -> None:
    data = bytearray(path.read_bytes())
    position = min(len(data) - 1, int(at * len(data)))
    if how == "truncate":
        data = data[:position]
    elif how == "flip":
        data[position] ^= 1 << bit
    elif how == "zero":
        data[position : position + 4] = bytes(len(data[position : position + 4]))
    else:
        data += b"\1"
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def cache_model(tiny_encoder):
    from qcompress.model import build_model

    return build_model(tiny_encoder, head="none", similarity="fidelity", max_length=32)


@SETTINGS
@given(**DAMAGE)
@example(at=0.9, how="flip", bit=3)  # inside the pooled rows
def test_a_damaged_cache_shard_is_refused_or_its_entries_are_exact(tmp_path, cache_model, at, how, bit):
    """Whatever happens to a shard's bytes, a lookup raises InputError or gives each text its own pooled row or
    nothing (then it is encoded again): never another row."""
    import tempfile

    from qcompress.cache import PooledCache, text_key

    folder = tempfile.mkdtemp(dir=tmp_path)
    keys = [text_key(f"text {i}") for i in range(5)]
    rows = torch.arange(5 * cache_model.in_dim, dtype=torch.float32).reshape(5, -1) / 7
    PooledCache(folder, cache_model).add(keys, rows)
    _damage(next(Path(folder).glob("*/shard-*.safetensors")), at, how, bit)
    try:
        pooled, found = PooledCache(folder, cache_model).get(keys)
    except InputError:
        return
    assert torch.equal(pooled[found], rows[found])


@SETTINGS
@given(**DAMAGE)
@example(at=0.95, how="flip", bit=0)
def test_a_damaged_frozen_prefix_file_is_refused_or_read_exactly(tmp_path, at, how, bit):
    import tempfile

    from safetensors.torch import save_file

    from qcompress.frozen_prefix import _read_state, state_digest

    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "state.safetensors"
    state = torch.arange(24, dtype=torch.float32).reshape(6, 4) / 3
    save_file({"hidden": state}, str(path), metadata={"digest": state_digest(state)})
    _damage(path, at, how, bit)
    try:
        read = _read_state(path)
    except InputError:
        return
    assert read is None or torch.equal(read, state)
