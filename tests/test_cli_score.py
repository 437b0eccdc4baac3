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
    expected = paired_scores(model.encode([q for q, _ in pairs]), model.encode([p for _, p in pairs]), "fidelity")

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
