"""The design card's three commands, typed exactly as a new user types them, and `compress -o -` for pipelines.

    qcompress compress corpus.jsonl              -> corpus.parquet beside it, the default model (offline MiniLM)
    qcompress evaluate --trec 2019               -> $QCOMPRESS_TREC_DIR (a tiny fixture folder), the default model
    qcompress train --encoder bert-base-uncased  -> models/qbec-bert-base-uncased

Offline, "bert-base-uncased" is a tiny BERT in a folder of that name in the working folder (transformers reads a
folder before the hub), so the command is typed exactly as on a machine with internet.
"""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_tiny_bert
from qcompress.cli import app
from qcompress.formats import read_embeddings
from test_cli_evaluate import trec_dl_folder

runner = CliRunner()

DOCS = [
    {"_id": "d1", "title": "wing", "text": "the flow on a wing"},
    {"_id": "d2", "text": "heat transfer in a boundary layer"},
    {"_id": "d3", "text": "pressure of the flow"},
]


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.integration
def test_compress_corpus_jsonl(minilm_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    result = runner.invoke(app, ["compress", "corpus.jsonl"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    err = lines(result.stderr)
    assert err[0] == "writing corpus.parquet"
    assert err[1].startswith("note: no --model or --encoder given: using the default model, ")
    assert "the trained model shipped with qcompress" in err[1]  # the bundled 384 -> 128 head (issue 18)
    assert err[-1] == "wrote 3 rows of 128 float32 angles to corpus.parquet"
    emb = read_embeddings(tmp_path / "corpus.parquet")
    assert emb.ids == ["d1", "d2", "d3"] and emb.column == "angles" and emb.values.shape == (3, 128)

    again = runner.invoke(app, ["compress", "corpus.jsonl"])  # never replaced silently
    assert again.exit_code == 2 and again.stderr.count("\n") == 1
    assert "corpus.parquet exists; pass --force to replace it" in again.stderr

    # -o -: JSON lines on stdout, the same float32 values as the Parquet file (str(float32) reads back exactly).
    streamed = runner.invoke(app, ["compress", "corpus.jsonl", "-o", "-"])
    assert streamed.exit_code == 0, streamed.output
    rows = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["d1", "d2", "d3"] and set(rows[0]) == {"id", "angles"}
    np.testing.assert_array_equal(np.array([r["angles"] for r in rows], dtype=np.float32), emb.values.numpy())
    codes = runner.invoke(app, ["compress", "corpus.jsonl", "-o", "-", "--uint8", "--force"])
    assert codes.exit_code == 0 and all(0 <= v <= 255 for v in json.loads(codes.stdout.splitlines()[0])["angles"])

    forced = runner.invoke(app, ["compress", "corpus.jsonl", "--force", "--no-cache"])
    assert forced.exit_code == 0, forced.output


@pytest.mark.integration
def test_evaluate_trec_2019(minilm_path, tmp_path):
    folder = trec_dl_folder(tmp_path / "trec")
    result = runner.invoke(app, ["evaluate", "--trec", "2019"], env={"QCOMPRESS_TREC_DIR": str(folder)})
    assert result.exit_code == 0, result.output
    assert "using the default model" in result.stderr
    assert "trec-dl-2019 (test), protocol rerank: 43 queries" in result.stdout
    caption = " ".join(result.stdout.split())  # the table caption, unwrapped
    assert "re-ranking of a first-stage run (trec-dl-2019 first stage (shipped), up to 3 candidates per query (--top-k 1,000))" in caption  # the fixture's BM25 run
    for measure in ("nDCG@10", "RR(rel=2)@10", "R(rel=2)@100", "AP(rel=2)"):
        assert measure in result.stdout


@pytest.mark.integration
def test_train_encoder_bert_base_uncased(tmp_path, monkeypatch):
    """QBEC for one whole epoch of Cranfield's training split: 54 steps of 16 examples through all 4 layers of the
    tiny BERT. Its 64 positions make the default max length 64 tokens (256, or the encoder's limit where it is
    lower), a fraction of the cost of 256 (mostly attention, which grows with the square of the length)."""
    monkeypatch.chdir(tmp_path)
    make_tiny_bert(tmp_path / "bert-base-uncased", layers=4, positions=64)
    result = runner.invoke(app, ["train", "--encoder", "bert-base-uncased"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("writing models/qbec-bert-base-uncased (no -o given)\n")
    assert lines(result.stderr)[-1].startswith("wrote models/qbec-bert-base-uncased: 54 steps, final loss ")
    config = json.loads((tmp_path / "models/qbec-bert-base-uncased/qcompress.json").read_text())
    assert config["head"] == "quantum" and config["similarity"] == "fidelity" and config["max_length"] == 64
    assert config["training"]["variant"] == "QBEC" and config["training"]["train_layers"] == 4
    assert config["training"]["dataset"] is None  # the bundled Cranfield: 113 training queries, batch 16


def test_score_pairs_and_compress_without_a_model_use_the_default_model(tiny_encoder, tmp_path, monkeypatch):
    """The default model is qcompress.model.default_model_spec: a model folder shipped in the package when there is
    one (here the location is pointed at a tiny model folder), else the default encoder's own angles."""
    import qcompress.model
    from qcompress.model import build_model

    folder = tmp_path / "default_model"
    build_model(tiny_encoder, head="quantum", dim=8, max_length=32).save(folder)
    monkeypatch.setattr(qcompress.model, "DEFAULT_MODEL_DIR", folder)
    assert qcompress.model.default_model_spec().model_dir == str(folder)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "q.tsv").write_text("q1\twhat is a wing\nq2\theat transfer\n")
    result = runner.invoke(app, ["compress", "q.tsv"])
    assert result.exit_code == 0, result.output
    assert f"using the default model, the trained model shipped with qcompress ({folder})" in result.stderr
    assert read_embeddings(tmp_path / "q.parquet").values.shape == (2, 8)
    result = runner.invoke(app, ["score", "--pairs", "-"], input="what is a wing\ta wing\n")
    assert result.exit_code == 0 and float(result.stdout) <= 0.0  # a log-fidelity

    monkeypatch.setattr(qcompress.model, "DEFAULT_MODEL_DIR", tmp_path / "no-such-folder")
    spec = qcompress.model.default_model_spec()
    assert (spec.model_dir, spec.encoder, spec.similarity) == (None, qcompress.model.DEFAULT_ENCODER, "fidelity")


def test_compress_default_output_and_its_refusals(tiny_encoder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs.parquet").mkdir()
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    base = ["--encoder", tiny_encoder, "--max-length", "32"]
    cases = [
        (["docs.jsonl", *base], "-o docs.parquet: is a folder"),
        (["-", *base], "reading stdin: name the output"),
        (["docs.parquet", *base], "docs.parquet is already a .parquet file: name the output with -o"),
        (["docs.jsonl", "-o", "-", "--engine", "ray", *base], "-o - streams JSON lines"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["compress", *args])
        assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.output


def test_compress_to_stdout_streams_vectors_of_a_cosine_model_from_stdin(tiny_encoder, tmp_path, monkeypatch):
    """`... | qcompress compress - -o -`: a pipeline end to end; a cosine model's rows carry `vectors`, equal to
    the Parquet file's, and nothing is written to the working folder."""
    monkeypatch.chdir(tmp_path)
    text = "q1\twhat is a wing\nq2\theat transfer\n"
    base = ["--encoder", tiny_encoder, "--similarity", "cosine", "--max-length", "32", "--no-cache"]
    streamed = runner.invoke(app, ["compress", "-", "-o", "-", *base], input=text)
    assert streamed.exit_code == 0, streamed.output
    rows = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert [set(r) for r in rows] == [{"id", "vectors"}] * 2 and [r["id"] for r in rows] == ["q1", "q2"]
    assert list(tmp_path.iterdir()) == []
    written = runner.invoke(app, ["compress", "-", "-o", "q.parquet", *base], input=text)
    assert written.exit_code == 0, written.output
    emb = read_embeddings(tmp_path / "q.parquet")
    assert emb.column == "vectors"
    np.testing.assert_array_equal(np.array([r["vectors"] for r in rows], dtype=np.float32), emb.values.numpy())
