"""`qcompress bench` through the command line, on a tiny random BERT: overlapping fit and evaluated documents
refused, float32's recall exactly 1, the JSON object, every method's bytes, resuming, the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import WORDS
from qcompress.cli import app

runner = CliRunner()


def _texts(n: int, offset: int = 0) -> list[str]:
    """n distinct short texts made of the tiny vocabulary's words."""
    return [" ".join(WORDS[(i * 7 + j * 3 + offset) % len(WORDS)] for j in range(5 + i % 4)) + f" {i + offset}"
            for i in range(n)]


def _write_corpus(path: Path, ids: list[str], texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in zip(ids, texts)))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    return _write_corpus(root / "corpus.jsonl", [f"d{i}" for i in range(80)], _texts(80))


@pytest.fixture(scope="module")
def queries(corpus) -> tuple[Path, Path]:
    root = corpus.parent
    (root / "queries.tsv").write_text("q1\tthe flow on a wing\nq2\theat in the boundary layer\nq3\tpressure\n")
    # q1 and q2 judge 10 documents relevant each (some are evaluated whatever the split); q3's only judgement is
    # not relevant: scored for recall, not for NDCG
    lines = [f"q1 0 d{i} 1" for i in range(1, 11)] + [f"q2 0 d{i} 2" for i in range(11, 21)] + ["q3 0 d0 0"]
    (root / "qrels.txt").write_text("\n".join(lines) + "\n")
    return root / "queries.tsv", root / "qrels.txt"


def bench(*args: str, env: dict | None = None):
    return runner.invoke(app, ["bench", *args], env=env)


def bench_json(*args: str) -> dict:
    result = bench(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def full_run(tiny_encoder, corpus, queries, tmp_path_factory):
    """Every method at 8 and 16 bytes on 40 fit / 40 evaluated documents, one seed, heads of 2 steps, no cache
    folder, results kept."""
    out = tmp_path_factory.mktemp("out")
    args = [str(corpus), "--encoder", tiny_encoder, "--queries", str(queries[0]), "--qrels", str(queries[1]),
            "--bytes", "8", "--bytes", "16", "--seed", "5", "--head-steps", "2", "--pseudo-queries", "30",
            "--no-cache", "--out", str(out)]
    return bench_json(*args), args, out


def test_fit_and_evaluated_documents_that_overlap_are_refused_by_id_and_by_text(tiny_encoder, corpus, tmp_path):
    texts = _texts(80)
    same_id = _write_corpus(tmp_path / "same-id.jsonl", ["d3", "new1"], ["an unseen text", "another unseen one"])
    same_text = _write_corpus(tmp_path / "same-text.jsonl", ["x1", "x2", "x3"], [texts[5], texts[9], "unseen"])
    for fit, message in ((same_id, '1 fit document is also evaluated (same id or same text), e.g. fit document "d3" '
                                   "is also an evaluated one"),
                         (same_text, '2 fit documents are also evaluated (same id or same text), e.g. fit document '
                                     '"x1" has the text of evaluated document "d5"')):
        result = bench(str(corpus), "--fit-corpus", str(fit), "--encoder", tiny_encoder, "--method", "float32")
        assert result.exit_code == 1, result.output
        assert message in result.output and "--transductive" in result.output
        assert len(result.output.strip().splitlines()) == 1  # one line, nothing else printed
    # The same fit corpus is accepted when the run says it is transductive... which takes no --fit-corpus at all:
    result = bench(str(corpus), "--fit-corpus", str(same_id), "--transductive", "--encoder", tiny_encoder)
    assert result.exit_code == 2 and "--transductive" in result.output


def test_a_disjoint_fit_corpus_is_accepted_and_the_output_says_inductive(tiny_encoder, corpus, tmp_path):
    fit = _write_corpus(tmp_path / "fit.jsonl", [f"f{i}" for i in range(30)], _texts(30, offset=500))
    out = bench_json(str(corpus), "--fit-corpus", str(fit), "--encoder", tiny_encoder, "--method", "float32",
                     "--method", "pca-scalar", "--bytes", "8", "--no-cache", "--pseudo-query-kind", "spans")
    assert out["protocol"] == "inductive" and (out["fit_documents"], out["evaluated_documents"]) == (30, 80)
    assert out["pseudo_query_kind"] == "spans" and out["query_sets"][0]["queries"] == 80  # all, fewer than 2,000
    assert out["rows"][-1]["measures"]["pseudo-queries"]["recall@10"]["mean"] == 1.0  # float32, last
    assert out["description"] == "inductive: fit on 30 documents disjoint from the 80 evaluated"


def test_float32_recall_against_itself_is_exactly_one(full_run):
    out, _, folder = full_run
    row = next(r for r in out["rows"] if r["method"] == "float32")
    for name in ("pseudo-queries", "queries"):
        for k in ("recall@10", "recall@100"):
            assert row["measures"][name][k] == {"mean": 1.0, "low": 1.0, "high": 1.0,
                                                "queries": 30 if name == "pseudo-queries" else 3}
    stored = json.loads((folder / "results" / "float32.json").read_text())
    assert set(stored["per_query"]["pseudo-queries"]["recall@10"]) == {1.0}


def test_the_json_object_says_what_was_run(full_run):
    out, _, _ = full_run
    assert out["protocol"] == "inductive" and out["fit_documents"] + out["evaluated_documents"] == 80
    assert out["description"].startswith("inductive: fit on 40 documents disjoint from the 40 evaluated")
    assert out["budgets"] == [8, 16] and out["seeds"] == [5] and out["ranked_by"] == "pseudo-queries recall@10"
    assert out["query_sets"] == [
        {"name": "pseudo-queries", "queries": 30, "judged": 0, "own_document_left_out": True},
        {"name": "queries", "queries": 3, "judged": 2, "own_document_left_out": False}]
    assert out["notes"] == ["1 of 3 queries have no positive judgement among the evaluated documents: scored for "
                            "recall, not for NDCG@10"]
    row = out["rows"][0]
    assert set(row) >= {"method", "setting", "label", "budget", "seeds", "bytes_stored", "bytes_resident",
                        "fitted_numbers", "trained_parameters", "fit_seconds", "search_seconds", "measures", "rank",
                        "best_split"}
    assert set(row["measures"]["pseudo-queries"]) == {"recall@10", "recall@100"}
    assert set(row["measures"]["queries"]) == {"recall@10", "recall@100", "ndcg@10"}
    assert row["measures"]["queries"]["ndcg@10"]["queries"] == 2
    assert {r["method"] for r in out["rows"]} == {"float32", "float16", "int8", "binary", "pca-scalar", "opq", "pq",
                                                   "rabitq", "lsh", "head"} - {"pq", "opq"}
    # 40 fit documents are too few for PQ's k-means at any split, and RaBitQ's factors alone take 8 bytes: refused,
    # and said
    refused = {(r["method"], r["budget"]): r["reason"] for r in out["refused"]}
    assert set(refused) == {("pq", 8), ("pq", 16), ("opq", 8), ("opq", 16), ("rabitq", 8)}
    assert "fit documents (40 per centroid), there are 40" in refused["pq", 16]
    assert "factors alone exceed 8 B" in refused["rabitq", 8]
    for budget in (8.0, 16.0):  # ranks 1, 2, ... within each budget, by pseudo-query recall@10
        group = [r for r in out["rows"] if r["budget"] == budget]
        assert [r["rank"] for r in group] == list(range(1, len(group) + 1))
        recalls = [r["measures"]["pseudo-queries"]["recall@10"]["mean"] for r in group]
        assert recalls == sorted(recalls, reverse=True)
        pca = [r for r in group if r["method"] == "pca-scalar"]  # 8 B: 32 x 2, 16 x 4, 8 x 8 bits; 16 B: 32 x 4, 16 x 8
        assert [r["best_split"] for r in pca] == [True] + [False] * (len(pca) - 1)
        assert {r["splits_in_budget"] for r in pca} == {len(pca)} and len(pca) == (3 if budget == 8 else 2)


def test_every_method_reaches_the_bytes_it_claims(full_run):
    out, _, folder = full_run
    for row in out["rows"]:
        assert row["bytes_resident"] == row["bytes_stored"]
        if row["method"] in ("float32", "float16", "int8", "binary"):
            assert row["bytes_stored"] == {"float32": 128, "float16": 64, "int8": 32, "binary": 4}[row["method"]]
        elif row["method"] == "rabitq":
            assert row["bytes_stored"] <= row["budget"]
        else:
            assert row["bytes_stored"] == row["budget"], row["label"]
    head = [r for r in out["rows"] if r["method"] == "head"]
    # one 16-qubit head serves both budgets: fitted 4-bit codes at 8 B, uint8 angles at 16 B
    assert [(r["setting"], r["bytes_stored"]) for r in head] == [({"qubits": 16, "bits": 4}, 8.0),
                                                                 ({"qubits": 16, "bits": 8}, 16.0)]
    assert all(r["trained_parameters"] > 0 and r["seeds"] == [5] for r in head)
    files = sorted(p.name for p in (folder / "results").glob("*.json"))
    assert "head_qubits=16_bits=4-seed5.json" in files and "pca-scalar_dims=8_bits=8.json" in files


def test_a_rerun_with_the_same_settings_skips_every_finished_run(full_run, monkeypatch):
    out, args, folder = full_run
    from qcompress.bench import methods

    def refuse(*_, **__):
        raise AssertionError("a finished run was run again")

    for method in methods.METHODS.values():
        monkeypatch.setattr(method, "fit", refuse)
    again = bench_json(*args)
    assert [r["measures"] for r in again["rows"]] == [r["measures"] for r in out["rows"]]
    # another seed is a new run: the seeded methods are fitted again
    monkeypatch.undo()
    result = bench(*[a if a != "5" else "6" for a in args], "--method", "lsh", "--json")
    assert result.exit_code == 0, result.output
    assert (folder / "results" / "lsh_bits=64-seed6.json").is_file()


def test_the_table_and_the_plot(tiny_encoder, corpus, queries, tmp_path):
    plot = tmp_path / "frontier.png"
    result = bench(str(corpus), "--encoder", tiny_encoder, "--queries", str(queries[0]), "--qrels", str(queries[1]),
                   "--method", "float32", "--method", "pca-scalar", "--method", "lsh", "--seed", "1", "--bytes", "8",
                   "--plot", str(plot), "--transductive", "--no-cache")
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "transductive: fit on the 80 evaluated documents themselves" in result.stdout
    assert "ndcg@10 (queries)" in result.stdout and "pca-scalar" in result.stdout


@pytest.mark.parametrize("args,message,code", [
    (["--method", "nope"], "--method nope: unknown", 2),
    (["--qrels", "x.txt"], "--qrels judges the --queries", 2),
    (["--fit-fraction", "0.3", "--transductive"], "--transductive fits on the evaluated documents", 2),
    (["--fit-fraction", "1.0"], "fit fraction must be between 0 and 1", 1),
])
def test_wrong_usage_is_one_line(tiny_encoder, corpus, args, message, code):
    result = bench(str(corpus), "--encoder", tiny_encoder, *args)
    assert result.exit_code == code and message in result.output, result.output


def test_ctrl_c_keeps_the_finished_runs(tiny_encoder, corpus, tmp_path, monkeypatch):
    from qcompress.bench import methods

    def interrupt(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(methods.METHODS["lsh"], "fit", interrupt)  # lsh runs after float32 and pca-scalar
    out = tmp_path / "out"
    result = bench(str(corpus), "--encoder", tiny_encoder, "--method", "float32", "--method", "pca-scalar",
                   "--method", "lsh", "--bytes", "8", "--seed", "1", "--no-cache", "--out", str(out))
    assert result.exit_code == 130, result.output
    assert "finished runs are kept in" in result.output
    kept = sorted(p.name for p in (out / "results").glob("*.json"))
    assert kept == ["float32.json", "pca-scalar_dims=16_bits=4.json", "pca-scalar_dims=32_bits=2.json",
                    "pca-scalar_dims=8_bits=8.json"]  # 64 x 1 bit would need 64 dimensions: the tiny BERT has 32
