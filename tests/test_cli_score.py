"""`qcompress score`: TREC runs from two Parquet files (same ranking as `evaluate --run-out`), text pairs, errors."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from qcompress.cli import app
from qcompress.formats import read_run
from qcompress.model import build_model, load_model
from qcompress.similarity import paired_scores

runner = CliRunner()

DOCS = {
    "d1": "the flow on a wing", "d2": "heat transfer in a boundary layer", "d3": "pressure of the flow",
    "d4": "what are the boundary layer effects", "d5": "a wing", "d6": "heat of the wing at pressure",
}
QUERIES = {"q1": "wing flow", "q2": "heat transfer", "q3": "boundary layer pressure"}


def beir_folder(root):
    """A small BEIR collection: corpus.jsonl, queries.jsonl, qrels/test.tsv (every query judged)."""
    root.mkdir()
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq3\td4\t1\n")
    return root


@pytest.fixture(scope="module")
def models(tiny_encoder, tmp_path_factory):
    """Two model folders on the tiny BERT: a quantum head (fidelity) and a linear head (cosine)."""
    root = tmp_path_factory.mktemp("models")
    build_model(tiny_encoder, head="quantum", dim=16, max_length=64).save(root / "qbec")
    torch.manual_seed(1)
    build_model(tiny_encoder, head="linear", dim=16, max_length=64).save(root / "bec")
    return {"qbec": str(root / "qbec"), "bec": str(root / "bec")}


def compress(texts_file, model, out, *extra):
    result = runner.invoke(app, ["compress", str(texts_file), "--model", model, "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out


def ranking(run):
    return {q: sorted(docs, key=lambda d: -docs[d]) for q, docs in run.items()}


@pytest.mark.parametrize("name", ["qbec", "bec"])
def test_score_gives_the_ranking_of_evaluate_run_out(models, tmp_path, name):
    folder = beir_folder(tmp_path / "beir")
    queries = compress(folder / "queries.jsonl", models[name], tmp_path / "q.parquet")
    corpus = compress(folder / "corpus.jsonl", models[name], tmp_path / "c.parquet")
    result = runner.invoke(app, ["score", str(queries), str(corpus), "--top-k", "4", "--tag", "mine"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 * 4
    qid, q0, docid, rank, score, tag = lines[0].split()
    assert (qid, q0, rank, tag) == ("q1", "Q0", "1", "mine") and docid in DOCS
    if name == "qbec":
        assert float(score) <= 0.0  # log-fidelity

    evaluated = tmp_path / "eval.trec"
    result = runner.invoke(app, ["evaluate", "--model", models[name], "--dataset", str(folder), "--protocol", "full",
                                 "--top-k", "4", "--run-out", str(evaluated), "--json"])
    assert result.exit_code == 0, result.output
    scored = tmp_path / "score.trec"
    result = runner.invoke(app, ["score", str(queries), str(corpus), "--top-k", "4", "-o", str(scored)])
    assert result.exit_code == 0 and result.stdout == ""
    mine, theirs = read_run(scored), read_run(evaluated)
    assert ranking(mine) == ranking(theirs)
    assert mine == theirs  # same scores too: both sides score each pair with one reference formula


def test_score_corpus_folder_and_uint8_against_float32(models, tmp_path):
    folder = beir_folder(tmp_path / "beir")
    queries = compress(folder / "queries.jsonl", models["qbec"], tmp_path / "q.parquet")
    lines = (folder / "corpus.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_text("".join(lines[:3]))
    (tmp_path / "b.jsonl").write_text("".join(lines[3:]))
    parts = tmp_path / "corpus"
    parts.mkdir()
    compress(tmp_path / "a.jsonl", models["qbec"], parts / "a.parquet", "--uint8")
    compress(tmp_path / "b.jsonl", models["qbec"], parts / "b.parquet", "--uint8")
    whole = compress(folder / "corpus.jsonl", models["qbec"], tmp_path / "c.parquet")
    from_parts = runner.invoke(app, ["score", str(queries), str(parts), "--top-k", "6"])
    from_whole = runner.invoke(app, ["score", str(queries), str(whole), "--top-k", "6"])
    assert from_parts.exit_code == 0 and from_whole.exit_code == 0, from_parts.output
    def firsts(out):  # query -> its rank-1 document
        return {f[0]: f[2] for f in (line.split() for line in out.splitlines()) if f[3] == "1"}

    assert len(from_parts.stdout.splitlines()) == 3 * 6
    # 8-bit codes move each angle by at most pi/510: the same top document per query on this small example.
    assert firsts(from_parts.stdout) == firsts(from_whole.stdout)


def test_score_refuses_files_of_different_models(models, tmp_path):
    folder = beir_folder(tmp_path / "beir")
    queries = compress(folder / "queries.jsonl", models["qbec"], tmp_path / "q.parquet")
    corpus = compress(folder / "corpus.jsonl", models["bec"], tmp_path / "c.parquet")
    out = tmp_path / "run.trec"
    result = runner.invoke(app, ["score", str(queries), str(corpus), "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "come from different models" in result.stderr
    assert "compress both with the same model" in result.stderr
    assert not out.exists() and result.stdout == ""


def test_score_refuses_same_config_different_weights(tiny_encoder, models, tmp_path):
    torch.manual_seed(7)
    build_model(tiny_encoder, head="quantum", dim=16, max_length=64).save(tmp_path / "other")
    folder = beir_folder(tmp_path / "beir")
    queries = compress(folder / "queries.jsonl", models["qbec"], tmp_path / "q.parquet")
    corpus = compress(folder / "corpus.jsonl", str(tmp_path / "other"), tmp_path / "c.parquet")
    result = runner.invoke(app, ["score", str(queries), str(corpus)])
    assert result.exit_code == 1 and "model_id" in result.stderr


def test_score_pairs_in_order(models, tmp_path):
    pairs = [("wing flow", "the flow on a wing"), ("heat transfer", "pressure"), ("wing flow", "a wing")]
    pairs_file = tmp_path / "pairs.tsv"
    pairs_file.write_text("query\tpassage\n" + "".join(f"{q}\t{p}\n" for q, p in pairs))
    model = load_model(models["qbec"])
    expected = paired_scores(model.encode([q for q, _ in pairs], convert_to_tensor=True),
                             model.encode([p for _, p in pairs], convert_to_tensor=True), "fidelity")

    result = runner.invoke(app, ["score", "--pairs", str(pairs_file), "--model", models["qbec"]])
    assert result.exit_code == 0, result.output
    got = [float(x) for x in result.stdout.split()]
    assert got == pytest.approx(expected.tolist(), rel=1e-5)
    assert all(x <= 0 for x in got)

    result = runner.invoke(app, ["score", "--pairs", "-", "--model", models["qbec"], "--fidelity"],
                           input="".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in pairs))
    assert result.exit_code == 0, result.output
    assert [float(x) for x in result.stdout.split()] == pytest.approx([math.exp(x) for x in got], rel=1e-5)

    result = runner.invoke(app, ["score", "--pairs", str(pairs_file), "--model", models["bec"]])
    assert result.exit_code == 0
    assert all(-1.0 <= float(x) <= 1.0 for x in result.stdout.split())  # cosine
    result = runner.invoke(app, ["score", "--pairs", str(pairs_file), "--model", models["bec"], "--fidelity"])
    assert result.exit_code == 1 and "--fidelity needs an angle model" in result.stderr


def test_score_usage_errors(models, tmp_path):
    pairs_file = tmp_path / "pairs.tsv"
    pairs_file.write_text("a\tb\nonly-one-field\n")
    good = tmp_path / "good.tsv"
    good.write_text("a\tb\n")
    cases = [
        (["score"], "give QUERIES and CORPUS", 2),
        (["score", str(tmp_path / "nope.parquet"), str(tmp_path / "nope2.parquet")], "file not found", 1),
        (["score", "--pairs", str(pairs_file)], "pairs.tsv:2: no tab", 1),  # input is checked before the model loads
        (["score", "--pairs", str(pairs_file), "--model", models["qbec"]], "pairs.tsv:2: no tab", 1),
        (["score", "a.parquet", "b.parquet", "--model", models["qbec"]], "go with --pairs", 2),
        (["score", "a.parquet", "b.parquet", "--top-k", "0"], "'--top-k'", 2),
    ]
    for args, message, code in cases:  # 1: bad input, 2: wrong usage
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)
        assert result.stdout == ""


def test_score_help():
    result = runner.invoke(app, ["score", "--help"])
    assert result.exit_code == 0
    assert "log-fidelity" in result.stdout and "--pairs" in result.stdout and "--top-k" in result.stdout


# -- issue 14: duplicate ids, corpus angle range, damaged files, closed pipes -----------------------------------

META = {"encoder": "x", "head": "none", "dim": 2, "similarity": "fidelity", "encoding": "float32",
        "column": "angles"}


def angle_file(path, ids, rows, meta=META):
    """An embedding file written with pyarrow directly: what a hand-made or foreign file can hold."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array([v for row in rows for v in row], pa.float32())
    table = pa.table({"id": ids, "angles": pa.FixedSizeListArray.from_arrays(flat, len(rows[0]))})
    pq.write_table(table.replace_schema_metadata({b"qcompress": json.dumps(meta)}), path, row_group_size=2)
    return path


def test_score_refuses_duplicate_ids_in_the_corpus_and_in_the_queries(tmp_path):
    """Issue 14 item 2 (fails on main: the later row's score replaced the earlier one's, exit 0)."""
    queries = angle_file(tmp_path / "q.parquet", ["q1", "q2"], [[0.5, 0.5], [1.0, 1.0]])
    corpus = angle_file(tmp_path / "c.parquet", ["a", "b", "c", "a"], [[0.5, 0.5], [0.2, 0.2], [1, 1], [3, 3]])
    result = runner.invoke(app, ["score", str(queries), str(corpus), "--top-k", "3"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (f'qcompress: error: {corpus}: field "id": duplicate id "a" in row 4 (first in '
                             "c.parquet, row 1); ids must be unique\n")
    twice = angle_file(tmp_path / "q2.parquet", ["q1", "q1"], [[0.5, 0.5], [1.0, 1.0]])
    good = angle_file(tmp_path / "c2.parquet", ["a", "b"], [[0.5, 0.5], [0.2, 0.2]])
    result = runner.invoke(app, ["score", str(twice), str(good)])
    assert result.exit_code == 1 and 'q2.parquet: field "id": duplicate id "q1" in row 2' in result.stderr


def test_score_checks_corpus_angles_like_query_angles(tmp_path):
    """Issue 14 item 3: corpus angles outside [0, pi] are refused naming the file, row and id (already so on
    main: the corpus goes through the same checked reader as the queries; this test keeps it that way)."""
    queries = angle_file(tmp_path / "q.parquet", ["q1"], [[0.5, 0.5]])
    corpus = angle_file(tmp_path / "c.parquet", ["a", "b", "c"], [[0.5, 0.5], [4.0, 0.2], [1.0, 1.0]])
    for args in ([str(queries), str(corpus)], [str(corpus), str(queries)]):
        result = runner.invoke(app, ["score", *args])
        assert result.exit_code == 1 and result.stderr.count("\n") == 1
        assert f'{corpus}: field "angles": row 2 (id "b"): angles must be radians in [0, pi], found 4' in result.stderr


def test_a_damaged_parquet_file_gives_one_line(models, tmp_path):
    """Issue 14 item 12 (fails on main: a 50-line traceback from pyarrow's Thrift reader)."""
    import random

    import pyarrow.parquet as pq

    from qcompress.formats import EmbeddingWriter

    path = tmp_path / "c.parquet"
    with EmbeddingWriter(path, dim=8, metadata=dict(META, dim=8), row_group_size=100) as writer:
        writer.write([f"d{i}" for i in range(500)], torch.rand(500, 8) * math.pi)
    queries = angle_file(tmp_path / "q.parquet", ["q1"], [[0.5] * 8], meta=dict(META, dim=8))
    offset = pq.ParquetFile(path).metadata.row_group(2).column(0).dictionary_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 64] = random.Random(0).randbytes(64)  # a page header in the middle of the file
    path.write_bytes(bytes(data))
    for args in ([str(queries), str(path)], [str(path), str(queries)]):
        result = runner.invoke(app, ["score", *args])
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"qcompress: error: {path}: cannot read the file: it is damaged")


def test_score_into_a_closed_pipe_exits_quietly(tmp_path):
    """Issue 14 item 16 (fails on main: `score ... | head` printed a BrokenPipeError traceback)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    queries = angle_file(tmp_path / "q.parquet", [f"q{i}" for i in range(50)], [[0.5, 0.5]] * 50)
    corpus = angle_file(tmp_path / "c.parquet", [f"d{i}" for i in range(200)], [[i / 100, 1.0] for i in range(200)])
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "qcompress", "score", str(queries), str(corpus), "--top-k", "100"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before anything is written, as `| head -0`
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == ""


# -- approximate search: index build, score --index ------------------------------------------------------------


def test_index_build_and_score_with_the_index(tmp_path):
    from qcompress.formats import EmbeddingWriter

    g = torch.Generator().manual_seed(0)
    centres = torch.rand(20, 16, generator=g) * math.pi
    corpus = (centres.repeat(50, 1) + 0.05 * torch.randn(1000, 16, generator=g)).clamp(0, math.pi)
    meta = {"encoder": "x", "head": "none", "similarity": "fidelity"}
    with EmbeddingWriter(tmp_path / "c.parquet", dim=16, metadata=meta, encoding="uint8") as writer:
        writer.write([f"d{i}" for i in range(1000)], corpus)
    with EmbeddingWriter(tmp_path / "q.parquet", dim=16, metadata=meta) as writer:
        writer.write([f"q{i}" for i in range(5)], corpus[:5])
    index = tmp_path / "c.index"
    result = runner.invoke(app, ["index", "build", str(tmp_path / "c.parquet"), "-o", str(index), "--nlist", "8"])
    assert result.exit_code == 0, result.output
    assert "indexed 1,000 rows in 8 cells" in result.stderr and result.stdout == ""
    assert sorted(p.name for p in index.iterdir()) == ["ids.arrow", "index.json", "ivf.faiss", "values.npy"]
    result = runner.invoke(app, ["index", "build", str(tmp_path / "c.parquet"), "-o", str(index)])
    assert result.exit_code == 1 and "already exists; pass --force" in result.stderr

    approx = runner.invoke(app, ["score", str(tmp_path / "q.parquet"), "--index", str(index), "--nprobe", "8",
                                 "--top-k", "5"])
    exact = runner.invoke(app, ["score", str(tmp_path / "q.parquet"), str(tmp_path / "c.parquet"), "--top-k", "5"])
    assert approx.exit_code == 0 and exact.exit_code == 0, approx.output
    assert "recall@10 1.000 against exact search on 5 of 5 queries" in approx.stderr
    assert approx.stdout == exact.stdout  # every cell probed: the exact run, scores included

    cases = [  # 1: bad input, 2: wrong usage
        (["score", str(tmp_path / "q.parquet"), str(tmp_path / "c.parquet"), "--index", str(index)], "give QUERIES",
         2),
        (["score", str(tmp_path / "q.parquet"), "--index", str(tmp_path)], "not an index folder", 1),
        (["index", "build", str(tmp_path / "q.parquet"), "-o", str(tmp_path / "x"), "--nlist", "9"], "nlist must", 1),
    ]
    for args, message, code in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


# -- low-bit codes: score, evaluate --bits, index on code files ----------------------------------------------------


@pytest.fixture(scope="module")
def encoder128(tmp_path_factory):
    """A tiny random BERT of hidden size 128: with --head none --similarity fidelity, 128 qubit angles."""
    from conftest import make_tiny_bert

    return str(make_tiny_bert(tmp_path_factory.mktemp("bert128"), hidden=128))


def run_lines(text):
    return sorted(line.rsplit(" ", 1)[0] for line in text.splitlines())  # without the tag


def test_compress_bits_and_score_give_evaluate_bits_scores(encoder128, tmp_path):
    folder = beir_folder(tmp_path / "beir")
    model = ["--encoder", encoder128, "--head", "none", "--similarity", "fidelity"]
    queries, corpus = tmp_path / "q.parquet", tmp_path / "c4.parquet"
    for texts, out, extra in ((folder / "queries.jsonl", queries, ["--role", "query"]),
                              (folder / "corpus.jsonl", corpus, ["--bits", "4"])):
        result = runner.invoke(app, ["compress", str(texts), *model, "-o", str(out), *extra])
        assert result.exit_code == 0, result.output
    assert "wrote 6 rows of 128 qubits as 4-bit codes (64 bytes a row" in result.stderr
    scored = runner.invoke(app, ["score", str(queries), str(corpus), "--top-k", "4"])
    assert scored.exit_code == 0, scored.output
    run = tmp_path / "eval.trec"
    result = runner.invoke(app, ["evaluate", *model, "--dataset", str(folder), "--bits", "4", "--top-k", "4",
                                 "--run-out", str(run), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["models"][0]["bytes_per_vector"] == {"float32": 512, "uint8": 128, "codes": 64, "bits": 4}
    assert "documents ranked as 4-bit codes (64 bytes a vector), levels fitted per qubit" in result.stderr
    assert run_lines(run.read_text()) == run_lines(scored.stdout)  # the same documents, ranks and scores
    table = runner.invoke(app, ["evaluate", *model, "--dataset", str(folder), "--bits", "4", "--top-k", "4"])
    assert table.exit_code == 0 and "64 (4-bit x 128)" in table.stdout
    plain = runner.invoke(app, ["evaluate", *model, "--dataset", str(folder), "--top-k", "4", "--json"])
    assert json.loads(plain.stdout)["models"][0]["bytes_per_vector"]["codes"] is None  # float32 angles


def test_score_on_a_code_file_is_the_oracle_and_symmetric_codes_the_queries(tmp_path):
    from qcompress.codes import AngleCodes
    from qcompress.formats import EmbeddingWriter
    from qcompress.search import brute_force_topk

    g = torch.Generator().manual_seed(3)
    corpus = (math.pi / 2 + 0.3 * torch.randn(300, 12, generator=g)).clamp(0, math.pi)
    queries = (math.pi / 2 + 0.3 * torch.randn(4, 12, generator=g)).clamp(0, math.pi)
    codec = AngleCodes.fit(corpus, 3)
    meta = {"encoder": "x", "head": "none", "similarity": "fidelity"}
    paths = {name: tmp_path / f"{name}.parquet" for name in ("c3", "q", "q3", "other")}
    for name, values, ids, extra in (("c3", corpus, "d", {"codec": codec}), ("q", queries, "q", {}),
                                     ("q3", queries, "q", {"codec": codec}),
                                     ("other", queries, "q", {"codec": AngleCodes.uniform(12, 3)})):
        coded = {"encoding": "codes"} if extra else {}
        with EmbeddingWriter(paths[name], dim=12, metadata=meta, row_group_size=100, **coded, **extra) as writer:
            writer.write([f"{ids}{i}" for i in range(len(values))], values)

    def expected(query_angles):
        scores, rows = brute_force_topk(query_angles, codec.decode(codec.encode(corpus)), 5)
        return sorted(f"q{q} Q0 d{r} {rank} {s}" for q in range(4)
                      for rank, (r, s) in enumerate(zip(rows[q].tolist(), scores[q].tolist()), 1))

    def scored(*args):
        result = runner.invoke(app, ["score", *args, "--top-k", "5"])
        assert result.exit_code == 0, result.output
        return [" ".join(f[:4]) + f" {float(f[4])}" for f in (line.split() for line in run_lines(result.stdout))]

    assert sorted(scored(str(paths["q"]), str(paths["c3"]))) == expected(queries)
    symmetric = expected(codec.decode(codec.encode(queries)))
    assert sorted(scored(str(paths["q"]), str(paths["c3"]), "--symmetric")) == symmetric
    assert sorted(scored(str(paths["q3"]), str(paths["c3"]))) == symmetric  # coded queries: their levels
    result = runner.invoke(app, ["score", str(paths["other"]), str(paths["c3"])])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "are coded differently (3-bit codes with other levels)" in result.stderr
    result = runner.invoke(app, ["score", str(paths["q"]), str(paths["q"]), "--symmetric"])
    assert result.exit_code == 1 and "--symmetric codes the queries with the levels of a corpus" in result.stderr

    index = tmp_path / "c3.index"
    result = runner.invoke(app, ["index", "build", str(paths["c3"]), "-o", str(index), "--nlist", "4"])
    assert result.exit_code == 0, result.output
    for extra, truth in (([], expected(queries)), (["--symmetric"], symmetric)):
        approx = runner.invoke(app, ["score", str(paths["q"]), "--index", str(index), "--nprobe", "4", "--top-k", "5",
                                     *extra])
        assert approx.exit_code == 0, approx.output
        assert "recall@10 1.000" in approx.stderr  # every cell probed: the exact search on the codes
        assert sorted(" ".join(f[:4]) + f" {float(f[4])}" for f in (line.split() for line in
                                                                      run_lines(approx.stdout))) == truth
