"""`qcompress search`: a query text against a compressed corpus (issue 15), texts shown when stored."""

import json

import pytest
import torch
from typer.testing import CliRunner

from qcompress.cli import app
from qcompress.formats import read_embeddings, read_texts
from qcompress.model import build_model, load_model
from qcompress.search import brute_force_topk

runner = CliRunner()

DOCS = {
    "d1": "the flow on a wing", "d2": "heat transfer in a boundary layer", "d3": "pressure of the flow",
    "d4": "what are the boundary layer effects", "d5": "a wing",
}


@pytest.fixture(scope="module")
def corpus(tiny_encoder, tmp_path_factory):
    """A model folder and a corpus it compressed, with and without texts."""
    root = tmp_path_factory.mktemp("search")
    build_model(tiny_encoder, head="quantum", dim=16, max_length=64).save(root / "qbec")
    (root / "docs.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    for name, extra in (("with-text.parquet", ["--store-text"]), ("plain.parquet", [])):
        result = runner.invoke(app, ["compress", str(root / "docs.jsonl"), "--model", str(root / "qbec"),
                                     "-o", str(root / name), *extra])
        assert result.exit_code == 0, result.output
    return root


def test_search_prints_the_exact_ranking_with_texts(corpus):
    result = runner.invoke(app, ["search", "wing flow", "--corpus", str(corpus / "with-text.parquet"),
                                 "--model", str(corpus / "qbec"), "--top-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    model = load_model(corpus / "qbec")
    emb = read_embeddings(corpus / "with-text.parquet")
    scores, rows = brute_force_topk(model.encode(["wing flow"], convert_to_tensor=True), emb.values, 3)
    assert [h["id"] for h in hits] == [emb.ids[i] for i in rows[0].tolist()]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert [h["score"] for h in hits] == pytest.approx(scores[0].tolist(), abs=1e-5)
    assert all(h["text"] == DOCS[h["id"]] for h in hits)

    table = runner.invoke(app, ["search", "wing flow", "--corpus", str(corpus / "with-text.parquet"),
                                "--model", str(corpus / "qbec"), "--top-k", "3"])
    assert table.exit_code == 0 and "text" in table.stdout.splitlines()[0]
    assert DOCS[hits[0]["id"]] in table.stdout


def test_search_without_stored_texts_shows_ids(corpus):
    result = runner.invoke(app, ["search", "heat", "--corpus", str(corpus / "plain.parquet"),
                                 "--model", str(corpus / "qbec"), "--json"])
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(hits) == 5 and all(h["text"] is None for h in hits)
    table = runner.invoke(app, ["search", "heat", "--corpus", str(corpus / "plain.parquet"),
                                "--model", str(corpus / "qbec")])
    assert table.exit_code == 0 and "text" not in table.stdout.splitlines()[0]


def test_search_refuses_another_model_and_asks_for_one(corpus, tiny_encoder, tmp_path):
    torch.manual_seed(3)
    build_model(tiny_encoder, head="quantum", dim=16, max_length=64).save(tmp_path / "other")
    cases = [
        (["--model", str(tmp_path / "other")], "come from different models"),
        ([], "come from different models"),  # the default model (named on stderr) is not the corpus's
        (["--model", str(corpus / "qbec"), "--top-k", "0"], "--top-k"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["search", "wing", "--corpus", str(corpus / "plain.parquet"), *extra])
        assert result.exit_code in (1, 2) and message in result.output, result.output
        assert result.stdout == "" or result.exit_code == 2


def test_readers_expose_the_stored_texts(corpus):
    emb = read_embeddings(corpus / "with-text.parquet", texts=True)
    assert emb.texts == [t for _, t in read_texts(corpus / "docs.jsonl")]
    from qcompress.errors import InputError

    with pytest.raises(InputError, match="has no `text` column"):
        read_embeddings(corpus / "plain.parquet", texts=True)


def test_search_on_a_code_file_ranks_the_query_against_the_stored_codes(corpus):
    coded = corpus / "c2.parquet"
    result = runner.invoke(app, ["compress", str(corpus / "docs.jsonl"), "--model", str(corpus / "qbec"),
                                 "-o", str(coded), "--bits", "2", "--store-text"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", "wing flow", "--corpus", str(coded), "--model", str(corpus / "qbec"),
                                 "--top-k", "4", "--json"])
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    emb = read_embeddings(coded)  # the codes' levels
    query = load_model(corpus / "qbec").encode(["wing flow"], convert_to_tensor=True)
    scores, rows = brute_force_topk(query, emb.values, 4)
    assert [h["id"] for h in hits] == [emb.ids[i] for i in rows[0].tolist()]
    assert [h["score"] for h in hits] == pytest.approx(scores[0].tolist(), abs=1e-5)
    assert all(h["text"] == DOCS[h["id"]] for h in hits)


def test_search_encodes_the_query_with_the_query_prompt(tiny_encoder, tmp_path):
    """Issue 27 item 1: `search` ranks as `compress --role query` + `score` do, for a model with a query prompt."""
    build_model(tiny_encoder, head="quantum", dim=16, max_length=64, query_prompt="what are the ").save(tmp_path / "m")
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    (tmp_path / "q.jsonl").write_text(json.dumps({"_id": "q", "text": "wing flow"}) + "\n")
    for source, out, role in (("docs.jsonl", "c.parquet", "document"), ("q.jsonl", "q.parquet", "query")):
        result = runner.invoke(app, ["compress", str(tmp_path / source), "--model", str(tmp_path / "m"),
                                     "--role", role, "-o", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    run = runner.invoke(app, ["score", str(tmp_path / "q.parquet"), str(tmp_path / "c.parquet"), "--top-k", "5"])
    assert run.exit_code == 0, run.output
    expected = [(line.split()[2], float(line.split()[4])) for line in run.stdout.splitlines()]
    result = runner.invoke(app, ["search", "wing flow", "--corpus", str(tmp_path / "c.parquet"),
                                 "--model", str(tmp_path / "m"), "--top-k", "5", "--json"])
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [h["id"] for h in hits] == [doc for doc, _ in expected]
    assert [h["score"] for h in hits] == pytest.approx([score for _, score in expected], abs=1e-5)
    # the prompt matters for this model: without it the scores differ
    model = load_model(tmp_path / "m")
    plain, prompted = (torch.as_tensor(model.encode(["wing flow"], role=role)) for role in (None, "query"))
    assert not torch.allclose(plain, prompted)
