"""`qcompress evaluate`: protocols with hand-computable results, model comparison, run files, errors, Cranfield."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from qcompress.cli import app
from qcompress.formats import read_run
from qcompress.model import build_model

runner = CliRunner()

DOCS = {
    "d1": "the flow on a wing", "d2": "heat transfer in a boundary layer", "d3": "pressure of the flow",
    "d4": "what are the boundary layer effects", "d5": "a wing", "d6": "heat of the wing at pressure",
}
QUERIES = {"q1": "wing flow", "q2": "heat transfer", "q3": "boundary layer pressure"}
# q1 and q2: exactly one judged document, relevant -> judged NDCG@10 = 1 whatever the model.
# q3: only non-relevant judgements -> 0. Mean 2/3.
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq3\td4\t0\nq3\td3\t0\n"


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "beir"
    root.mkdir()
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(QRELS)
    return root


@pytest.fixture(scope="module")
def models(tiny_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    build_model(tiny_encoder, head="quantum", dim=16, max_length=64).save(root / "qbec")
    torch.manual_seed(1)
    build_model(tiny_encoder, head="linear", dim=16, max_length=64).save(root / "bec")
    return {"qbec": str(root / "qbec"), "bec": str(root / "bec")}


def evaluate_json(*args, env=None):
    result = runner.invoke(app, ["evaluate", *args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result


def test_judged_protocol_hand_computed(models, folder):
    out, _ = evaluate_json("--model", models["qbec"], "--dataset", str(folder), "--protocol", "judged", "--per-query")
    assert out["protocol"] == "judged" and out["queries"] == 3 and out["split"] == "test"
    assert out["nDCG@10"] == pytest.approx(2 / 3)  # ir_measures names
    assert out["RR@10"] == pytest.approx(2 / 3)
    assert out["measures"] == ["nDCG@10", "RR@10", "R@100", "R@1000", "AP"]
    assert out["metrics"]["qbec"]["nDCG@10"] == out["nDCG@10"]
    assert out["per_query"]["qbec"]["q3"]["nDCG@10"] == 0.0
    assert out["models"][0]["head_parameters"] == 12 * 1 * 16  # 32 -> 16 qubits: k = 2 registers
    assert out["models"][0]["bytes_per_vector"] == {"float32": 64, "uint8": 16, "codes": None, "bits": None}


def test_rerank_protocol_with_hand_made_first_stage_and_missing_query(models, folder, tmp_path):
    first = tmp_path / "bm25.trec"
    # q1: only unjudged/non-relevant candidates -> 0; q2: its relevant document alone -> 1; q3 absent -> 0.
    first.write_text("q1 Q0 d5 1 9.0 bm25\nq1 Q0 d6 2 8.0 bm25\nq2 Q0 d2 1 7.5 bm25\nq9 Q0 d1 1 1.0 bm25\n")
    out, result = evaluate_json("--model", models["qbec"], "--dataset", str(folder), "--first-stage", str(first))
    assert out["protocol"] == "rerank" and out["first_stage"] == str(first)
    assert out["queries"] == 3  # the missing query is counted, not dropped
    assert out["nDCG@10"] == pytest.approx(1 / 3)
    assert out["models"][0]["empty_queries"] == 1
    assert "1 of 3 judged queries had no candidates and score 0" in result.stderr


def test_full_protocol_is_the_default_for_folders_and_writes_the_run(models, folder, tmp_path):
    run_file = tmp_path / "run.trec"
    out, _ = evaluate_json("--model", models["qbec"], "--dataset", str(folder), "--top-k", "5",
                           "--run-out", str(run_file))
    assert out["protocol"] == "full" and out["top_k"] == 5
    run = read_run(run_file)
    assert set(run) == {"q1", "q2", "q3"} and all(len(docs) == 5 for docs in run.values())
    assert run_file.read_text().split("\n")[0].split()[-1] == "qbec"


def test_several_models_one_table_with_p_values(models, folder, tmp_path, tiny_encoder):
    args = ["--encoder", tiny_encoder, "--max-length", "64", "--model", models["qbec"], "--model", models["bec"],
            "--dataset", str(folder), "--permutations", "500", "--run-out", str(tmp_path / "run.trec")]
    out, _ = evaluate_json(*args)
    labels = [m["label"] for m in out["models"]]
    assert labels[1:] == ["qbec", "bec"] and labels[0].endswith(":cosine")
    assert "nDCG@10" not in out  # flat keys only for one model
    assert set(out["metrics"]) == set(labels)
    sig = out["significance"]
    assert set(sig) == {"qbec", "bec"} and sig["qbec"]["against"] == labels[0]
    assert 0 < sig["qbec"]["randomization_p"] <= 1 and sig["qbec"]["permutations"] == 500
    assert "t_test_p" in sig["bec"] and sig["qbec"]["metric"] == "nDCG@10" and "permutation_test" in sig["qbec"]["test"]
    # Holm over the two models compared with the first: the smaller raw p doubled, the larger at least that.
    raw = sorted((sig[m]["randomization_p"], m) for m in ("qbec", "bec"))
    assert sig[raw[0][1]]["randomization_p_holm"] == pytest.approx(min(1.0, 2 * raw[0][0]))
    assert sig[raw[1][1]]["randomization_p_holm"] == pytest.approx(max(min(1.0, 2 * raw[0][0]), raw[1][0]))
    assert [m["head_parameters"] for m in out["models"]] == [0, 192, 32 * 16 + 16]
    assert sorted(p.name for p in tmp_path.glob("run.*.trec")) == sorted(f"run.{m['tag']}.trec" for m in out["models"])

    result = runner.invoke(app, ["evaluate", *args[:-2], "--per-query"])
    assert result.exit_code == 0, result.output
    assert "protocol full: 3 queries" in result.stdout
    assert "…" not in result.stdout  # piped output is as wide as the table: no number is cut
    assert "nDCG@10" in result.stdout and "qbec" in result.stdout and "p (Holm)" in result.stdout
    assert "Per query" in result.stdout


def test_run_files_are_scored_alone_or_beside_models_with_paired_tests(models, folder, tmp_path, monkeypatch):
    """`evaluate --run FILE`: an existing run scored by the same measures (measure_run) as the models' runs."""
    from qcompress.evaluation import measure_run
    from qcompress.data import load_collection

    model_run = tmp_path / "model.trec"
    evaluate_json("--model", models["qbec"], "--dataset", str(folder), "--run-out", str(model_run))
    other = tmp_path / "bm25.trec"  # q1: its relevant d1 first; q2: nothing relevant; q3 absent (scores 0)
    other.write_text("q1 Q0 d1 1 9.0 bm25\nq1 Q0 d2 2 8.0 bm25\nq2 Q0 d5 1 7.0 bm25\n")

    monkeypatch.setattr("qcompress.model.ModelSpec.load", lambda *a, **k: pytest.fail("--run alone loads a model"))
    out, _ = evaluate_json("--run", str(model_run), "--run", str(other), "--dataset", str(folder),
                           "--permutations", "200", "--per-query")
    monkeypatch.undo()
    qrels = load_collection(str(folder), "test").qrels
    assert out["protocol"] == "runs" and [m["label"] for m in out["models"]] == ["model.trec", "bm25.trec"]
    assert out["models"][1] == {"label": "bm25.trec", "tag": "bm25.trec", "model": {"run": str(other)},
                                "head_parameters": None, "bytes_per_vector": None, "empty_queries": 1,
                                "run": str(other)}
    for label, path in (("model.trec", model_run), ("bm25.trec", other)):
        mean, per_query = measure_run(read_run(path), qrels, out["measures"])
        assert out["metrics"][label] == pytest.approx(mean) and out["per_query"][label] == per_query
    assert out["significance"]["bm25.trec"]["against"] == "model.trec"

    # Beside the model that wrote the first run: the same numbers, the run after it, tested against it.
    beside, _ = evaluate_json("--model", models["qbec"], "--run", str(model_run), "--dataset", str(folder),
                              "--permutations", "200")
    assert [m["label"] for m in beside["models"]] == ["qbec", "model.trec"]
    assert beside["metrics"]["qbec"] == pytest.approx(beside["metrics"]["model.trec"])
    assert beside["significance"]["model.trec"]["randomization_p"] == 1.0  # identical per-query values
    table = runner.invoke(app, ["evaluate", "--model", models["qbec"], "--run", str(other), "--dataset", str(folder)])
    assert table.exit_code == 0 and "bm25.trec" in table.stdout and "--run files scored as given" in table.stdout
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1\n")
    result = runner.invoke(app, ["evaluate", "--run", str(bad), "--dataset", str(folder)])
    assert result.exit_code == 1 and f"{bad}:1:" in result.stderr and result.stderr.count("\n") == 1


def trec_dl_folder(root):
    """A local TREC DL 2019 folder as qcompress.data.trecdl reads it: 43 judged queries, a passage pool without some
    judged passages, a BM25 run."""
    root.mkdir()
    (root / "queries.dl19.tsv").write_text("".join(f"{i}\tquery {i} about the wing flow\n" for i in range(43)))
    (root / "collection.tsv").write_text("".join(f"p{i}\t{text}\n" for i, text in enumerate(DOCS.values())))
    # Each query: p0 graded 3, p1 graded 1 (below relevance level 2), pX graded 2 but not in the pool.
    (root / "qrels.dl19-passage.txt").write_text(
        "".join(f"{i} 0 p0 3\n{i} 0 p1 1\n{i} 0 pX 2\n" for i in range(43)))
    (root / "run.bm25.dl19.trec").write_text("".join(f"{i} Q0 p{d} {d + 1} {9 - d} bm25\n" for i in range(42)
                                                  for d in (2, 3, 1)))
    return root


def test_trec_dl_from_a_local_folder(models, tmp_path):
    folder = trec_dl_folder(tmp_path / "trec")
    out, result = evaluate_json("--model", models["qbec"], "--trec", "2019", "--trec-dir", str(folder),
                                "--protocol", "judged")
    assert out["dataset"] == "trec-dl-2019" and out["protocol"] == "judged" and out["queries"] == 43
    assert out["relevance_level"] == 2 and out["judged_without_text"] == 43
    assert "43 of 129 judgements name documents without text" in result.stderr
    # RR and recall count grade >= 2 only, and say so: p0 is the one such passage with text, pX cannot be retrieved.
    assert out["measures"] == ["nDCG@10", "RR(rel=2)@10", "R(rel=2)@100", "R(rel=2)@1000", "AP(rel=2)"]
    assert out["R(rel=2)@100"] == pytest.approx(0.5)

    # With a local folder the default protocol is rerank of its BM25 run.
    out, result = evaluate_json("--model", models["qbec"], "--trec", "2019", env={"QCOMPRESS_TREC_DIR": str(folder)})
    assert out["protocol"] == "rerank" and out["first_stage"] == "trec-dl-2019 first stage (shipped)"
    assert out["R(rel=2)@100"] == 0.0  # BM25 never found p0
    assert out["models"][0]["empty_queries"] == 1  # query 42 is missing from the run: scored 0, counted
    assert "1 of 43 judged queries had no candidates" in result.stderr

    # pool: the whole passage pool, labelled apart from full-corpus ranking.
    out, result = evaluate_json("--model", models["qbec"], "--trec", "2019", "--trec-dir", str(folder),
                                "--protocol", "pool")
    assert out["protocol"] == "pool" and out["queries"] == 43 and out["models"][0]["empty_queries"] == 0
    assert out["R(rel=2)@100"] == pytest.approx(0.5)  # p0 is always ranked; pX has no text
    result = runner.invoke(app, ["evaluate", "--model", models["qbec"], "--dataset", "cranfield", "--protocol", "pool"])
    assert result.exit_code == 2 and "local TREC DL folder" in result.stderr


def test_evaluate_errors_are_one_line_and_leave_no_run(models, folder, tmp_path):
    run_out = tmp_path / "run.trec"
    base = ["evaluate", "--model", models["qbec"], "--run-out", str(run_out)]
    bad_input = [  # exit 1
        (["--dataset", "no-such-collection/xyz"], "ir_datasets does not know it"),
        (["--dataset", str(folder), "--first-stage", str(tmp_path / "missing.trec")], "file not found"),
        (["--dataset", str(folder), "--split", "dev"], "no judgements for split 'dev'"),
    ]
    wrong_usage = [  # exit 2, in the same one-line style
        (["--dataset", str(folder), "--protocol", "rerank"], "--protocol rerank needs --first-stage"),
        (["--dataset", str(folder), "--protocol", "judged", "--first-stage", str(tmp_path)], "only used by"),
        (["--dataset", str(folder), "--protocol", "bm25"], "'bm25' is not one of 'judged', 'full', 'pool', 'rerank'"),
        (["--trec", "2018"], "'2018' is not one of '2019', '2020'"),
        (["--trec", "2019", "--dataset", str(folder)], "give one"),
        (["--dataset", str(folder), "--similarity", "fidelity"], "go with --encoder"),
        (["--dataset", str(folder), "--top-k", "0"], "'--top-k'"),
        (["--dataset", str(folder), "--permutations", "0"], "'--permutations'"),
        (["--dataset", str(folder), "--metric", "nDCG@ten"], "--metric 'nDCG@ten' is not an ir_measures name"),
    ]
    for code, cases in ((1, bad_input), (2, wrong_usage)):
        for args, message in cases:
            result = runner.invoke(app, [*base, *args])
            assert result.exit_code == code, (args, result.output)
            assert message in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)
            assert result.stderr.startswith("qcompress: error: ") and result.stdout == "" and not run_out.exists()


def test_without_a_model_the_default_model_is_evaluated(models, folder, monkeypatch):
    """No --model or --encoder: qcompress.model.default_model_spec, here pointed at a tiny model folder."""
    import qcompress.model

    monkeypatch.setattr(qcompress.model, "DEFAULT_MODEL_DIR", Path(models["qbec"]))
    out, result = evaluate_json("--dataset", str(folder), "--protocol", "judged")
    assert out["models"][0]["label"] == "qbec" and out["nDCG@10"] == pytest.approx(2 / 3)
    assert "using the default model, the trained model shipped with qcompress" in result.stderr


def test_metric_takes_ir_measures_names_and_the_json_uses_them(models, folder):
    out, _ = evaluate_json("--model", models["qbec"], "--dataset", str(folder), "--protocol", "judged",
                           "--metric", "P@1", "--metric", "nDCG@10", "--metric", "AP(rel=2)", "--per-query")
    assert out["measures"] == ["P@1", "nDCG@10", "AP(rel=2)"]
    assert set(out["metrics"]["qbec"]) == {"P@1", "nDCG@10", "AP(rel=2)"}
    assert out["AP(rel=2)"] == pytest.approx(1 / 3)  # only q2's document is graded 2, ranked first of one
    assert set(out["per_query"]["qbec"]["q1"]) == {"P@1", "nDCG@10", "AP(rel=2)"}


def test_a_first_stage_document_outside_the_corpus_names_the_run_file_and_line(models, folder, tmp_path):
    first = tmp_path / "bm25.trec"
    first.write_text("q1 Q0 d1 1 9.0 bm25\nq1 Q0 d2 2 8.0 bm25\nq2 Q0 zz 1 7.5 bm25\n")
    result = runner.invoke(app, ["evaluate", "--model", models["qbec"], "--dataset", str(folder), "--first-stage",
                                 str(first)])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert f'{first}:3: field "docid": doc "zz" is not in the corpus of {folder}' in result.stderr


def test_trec_offline_without_a_folder_names_both_ways(models, monkeypatch):
    """--trec without $QCOMPRESS_TREC_DIR goes to ir_datasets; when that cannot download, one line says both."""
    import ir_datasets

    class Offline:  # ir_datasets knows the id, but reading its judgements needs a download
        def __getattr__(self, name):
            def fail(*args, **kwargs):
                # as ir_datasets raises it offline: every source's exception, quotes escaped in their reprs
                sources = [("RequestsDownload('https://trec.nist.gov/data/deep/2019qrels-pass.txt')", ConnectionError(
                    "HTTPSConnectionPool(host='trec.nist.gov', port=443): Max retries exceeded (Caused by "
                    "NameResolutionError(\"Failed to resolve 'trec.nist.gov' ([Errno -2])\"))"))] * 2
                raise RuntimeError("All download sources failed", sources)

            return (lambda: True) if name.startswith("has_") else fail

    monkeypatch.setattr(ir_datasets, "load", lambda dataset_id: Offline())
    result = runner.invoke(app, ["evaluate", "--model", models["qbec"], "--trec", "2019"],
                           env={"QCOMPRESS_TREC_DIR": None})
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    for way in ("$QCOMPRESS_TREC_DIR", "--trec-dir", "ir_datasets could not read msmarco-passage/trec-dl-2019/judged",
                "(no network: could not resolve 'trec.nist.gov')"):
        assert way in result.stderr
    assert len(result.stderr) < 600  # not every source's full exception


def test_ir_datasets_failed_attempts_are_not_logged_the_error_says_it():
    """Offline, ir_datasets logged six lines of failed attempts before qcompress's one-line error."""
    import logging

    from qcompress.data.irds import _import_ir_datasets

    ir_datasets = _import_ir_datasets("msmarco-passage")
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("ir_datasets")
    logger.addHandler(handler)
    try:
        log = ir_datasets.log.easy()
        log.info("download error: HTTPSConnectionPool(...). Retrying from start.")
        log.warn("Download failed: HTTPSConnectionPool(...)")
        log.info("[starting] downloading")
    finally:
        logger.removeHandler(handler)
    assert seen == ["[starting] downloading"]


def test_evaluate_help_names_the_protocols():
    result = runner.invoke(app, ["evaluate", "--help"])
    assert result.exit_code == 0
    for word in ("judged", "full", "rerank", "--first-stage", "--trec", "--json", "--per-query", "--run-out"):
        assert word in result.stdout


# -- the real encoder on the bundled Cranfield -----------------------------------------------------------------


@pytest.mark.integration
# MiniLM's sentence-transformers configuration normalises its embedding: its angles are those of the unit vector.
@pytest.mark.parametrize("similarity, expected", [("cosine", 0.391), ("fidelity", 0.391)])
def test_cranfield_minilm_full_protocol(minilm_path, pooled_cache, similarity, expected):
    """The README's number. The corpus is encoded once, at the default 256 tokens, by the first case: the second
    reads the pooled outputs from the session's cache ($QCOMPRESS_CACHE, which `evaluate` uses by default)."""
    result = runner.invoke(
        app,
        ["evaluate", "--encoder", minilm_path, "--head", "none", "--similarity", similarity,
         "--dataset", "cranfield", "--json"],
        env={"QCOMPRESS_CACHE": str(pooled_cache)},
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["protocol"] == "full" and out["queries"] == 112 and out["dataset"] == "cranfield"
    assert round(out["nDCG@10"], 3) == expected


def test_qrels_without_a_positive_judgement_give_a_warning(models, folder):
    """Issue 14 item 16: every metric is 0 then; the run still succeeds, with a warning on stderr."""
    _, judged = evaluate_json("--model", models["qbec"], "--dataset", str(folder), "--protocol", "judged")
    assert "warning" not in judged.stderr
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t0\nq3\td4\t0\n")
    out, result = evaluate_json("--model", models["qbec"], "--dataset", str(folder), "--protocol", "judged")
    assert out["nDCG@10"] == 0.0
    assert "warning" in result.stderr and "no positive judgement" in result.stderr


def test_bits_ranks_angle_models_on_codes_and_says_so(models, folder, monkeypatch):
    out, result = evaluate_json("--model", models["qbec"], "--model", models["bec"], "--dataset", str(folder),
                                "--bits", "3", "--protocol", "judged")
    sizes = {m["label"]: m["bytes_per_vector"] for m in out["models"]}
    assert sizes["qbec"] == {"float32": 64, "uint8": 16, "codes": 6, "bits": 3}  # 16 qubits x 3 bits
    assert sizes["bec"] == {"float32": 64, "uint8": None, "codes": None, "bits": None}
    assert "qbec: documents ranked as 3-bit codes (6 bytes a vector), levels fitted per qubit" in result.stderr
    assert "bec: cosine vectors, ranked as float32 (--bits codes qubit angles)" in result.stderr
    result = runner.invoke(app, ["evaluate", "--model", models["qbec"], "--dataset", str(folder), "--bits", "3",
                                 "--float32"])
    assert result.exit_code == 2 and "--bits and --float32 are ways to store the angles" in result.stderr

    # a model trained with --bits (QCompressModel.codec) is ranked on its codes by default, --float32 opts out
    from qcompress.codes import AngleCodes
    from qcompress.model import ModelSpec

    codec, load = AngleCodes.uniform(16, 2), ModelSpec.load

    def with_codec(self, device=None):
        model = load(self, device)
        model.codec = codec
        return model

    monkeypatch.setattr(ModelSpec, "load", with_codec)
    coded, result = evaluate_json("--model", models["qbec"], "--dataset", str(folder), "--per-query")
    assert coded["models"][0]["bytes_per_vector"]["codes"] == 4
    assert "levels the model's codec (codes.safetensors)" in result.stderr
    plain, _ = evaluate_json("--model", models["qbec"], "--dataset", str(folder), "--float32", "--per-query")
    assert plain["models"][0]["bytes_per_vector"]["codes"] is None
    explicit, _ = evaluate_json("--model", models["qbec"], "--dataset", str(folder), "--bits", "2", "--per-query")
    assert explicit["per_query"] == coded["per_query"]  # --bits 2 = the model's own 2-bit codes
