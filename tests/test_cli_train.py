"""`qcompress train`: success with --json, Ctrl-C and --resume, and one clear line for every kind of bad input."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qcompress import load_model
from qcompress.cli import app
from qcompress.training import checkpoint_dir

from test_training import TEST, TRAIN, write_beir

runner = CliRunner()


@pytest.fixture(scope="module")
def beir(tmp_path_factory) -> Path:
    return write_beir(tmp_path_factory.mktemp("beir") / "tiny")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def args(tiny_encoder, dataset, cache, out, *extra) -> list[str]:
    return ["train", "--encoder", tiny_encoder, "--dataset", str(dataset), "--cache-dir", str(cache), "-o", str(out),
            "--head", "quantum", "--dim", "8", "--max-length", "32", "--negatives", "3", "--batch-size", "2", *extra]


def test_train_json_summary_and_a_loadable_folder(tiny_encoder, beir, cache, tmp_path):
    out = tmp_path / "m"
    result = runner.invoke(app, args(tiny_encoder, beir, cache, out, "--eval-split", "test", "--epochs", "2", "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout: exactly one JSON object
    assert summary["output"] == str(out) and summary["steps"] == 6 and summary["epochs_completed"] == 2
    assert summary["best_epoch"] in (1, 2) and 0 <= summary["best_ndcg_cut_10"] <= 1
    assert summary["examples_per_s"] > 0 and 0 < summary["head_share"] <= 1 and summary["final_loss"] > 0
    assert "validation NDCG@10" in result.stderr
    assert load_model(out).encode(["wing"]).shape == (1, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_train_without_json_prints_nothing_on_stdout(tiny_encoder, beir, cache, tmp_path):
    out = tmp_path / "m"
    result = runner.invoke(app, args(tiny_encoder, beir, cache, out, "--variant", "qbfec", "--max-steps", "2"))
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "wrote" in result.stderr
    assert json.loads((out / "qcompress.json").read_text())["normalize"] is True


def test_help_documents_the_variants_and_the_authors_off_by_one():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "off-by-one" in text and "layer[0]" in text
    assert "BT, QBT" in text and "QBFEC" in text


def test_ctrl_c_exits_130_with_a_checkpoint_and_resume_finishes(tiny_encoder, beir, cache, tmp_path):
    """A real SIGINT to `python -m qcompress train` once its live log shows a step."""
    out = tmp_path / "m"
    long_run = args(tiny_encoder, beir, cache, out, "--epochs", "1000", "--save-every", "1")
    # SIGINT as a terminal's Ctrl-C delivers it, also when this test runs where SIGINT is ignored (then inherited).
    process = subprocess.Popen([sys.executable, "-m", "qcompress", *long_run], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        live_log, deadline = checkpoint_dir(out) / "train_log.jsonl", time.monotonic() + 300
        while not (live_log.is_file() and '"kind": "step"' in live_log.read_text()):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()  # a no-op once it has exited
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and stdout == ""
    assert not out.exists() and checkpoint_dir(out).is_dir()
    step = int(re.search(r"checkpoint of step (\d+) in ", stderr)[1])
    assert step >= 1 and (checkpoint_dir(out) / f"step-{step:09d}").is_dir()
    again = runner.invoke(app, [*long_run, "--lr", "1e-3", "--resume"])
    assert again.exit_code == 1 and "differ: lr" in again.stderr
    again = runner.invoke(app, [*long_run, "--resume", "--max-steps", str(step + 1), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["steps"] == step + 1 and not checkpoint_dir(out).exists()


def _folder(tmp_path: Path, **change) -> Path:
    root = tmp_path / "data"
    write_beir(root, splits={"train": TRAIN, "test": TEST})
    for name, text in change.items():
        path = root / name.replace("__", "/").replace("_jsonl", ".jsonl").replace("_tsv", ".tsv")
        if text is None:
            path.unlink()
        else:
            path.write_text(text)
    return root


BAD_DATA = {
    "missing corpus": (dict(corpus_jsonl=None), "missing corpus.jsonl"),
    "qrels names an unknown query": (dict(qrels__train_tsv=TRAIN + "q99\td1\t1\n"), 'query id "q99"'),
    "qrels names an unknown doc": (dict(qrels__train_tsv=TRAIN + "q1\td99\t1\n"), 'doc id "d99"'),
    "empty corpus": (dict(corpus_jsonl=""), "corpus is empty"),
    "split without judgements": (dict(qrels__train_tsv="query-id\tcorpus-id\tscore\n"), "has no judgements"),
    "no positives": (dict(qrels__train_tsv="query-id\tcorpus-id\tscore\nq1\td1\t0\n"), "no training examples"),
}
BAD_ARGS = {  # values out of range or not among the choices are usage errors: tests/test_cli_usage.py
    "too many layers": (["--train-layers", "9"], "--train-layers 9 is more than the 3 layers"),
    "more negatives than documents": (["--negatives", "50"], "fewer than 50 negatives"),
    "missing split": (["--split", "dev"], "no judgements for split 'dev'"),
    "missing eval split": (["--eval-split", "dev"], "no judgements for split 'dev'"),
    "quantum head with cosine": (["--similarity", "cosine"], "compared by fidelity, not cosine"),
}


@pytest.mark.parametrize("case", list(BAD_DATA) + list(BAD_ARGS))
def test_bad_input_one_line_exit_1_and_no_output_folder(tiny_encoder, cache, tmp_path, case):
    if case in BAD_DATA:
        change, message = BAD_DATA[case]
        dataset, extra = _folder(tmp_path, **change), []
    else:
        (extra, message), dataset = BAD_ARGS[case], _folder(tmp_path)
    out = tmp_path / "out" / "model"
    result = runner.invoke(app, args(tiny_encoder, dataset, cache, out, *extra))
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qcompress: error: ") and message in lines[0], result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_existing_output_is_refused_without_overwrite(tiny_encoder, beir, cache, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, args(tiny_encoder, beir, cache, out, "--max-steps", "1"))
    assert result.exit_code == 1 and "--overwrite" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"
    result = runner.invoke(app, args(tiny_encoder, beir, cache, out, "--max-steps", "1", "--overwrite"))
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() and (out / "qcompress.json").is_file()



def test_train_on_dl21_from_a_local_trec_folder(tiny_encoder, cache, tmp_path):
    """--dataset trec-dl-21 --trec-dir: grade >= 2 positives, judged-0 passages as the hard negatives."""
    folder = tmp_path / "trec"
    folder.mkdir()
    (folder / "queries.dl21.tsv").write_text("q1\twing lift\nq2\tboundary layer heat\nq3\tno judgements\n")
    (folder / "collection.dl21.tsv").write_text(
        "p1\tlift on a wing\np2\theat transfer in a boundary layer\np3\tshock waves\np4\tsupersonic flow\n"
        "p5\tpressure\np6\tturbulence\n")
    (folder / "qrels.dl21-passage.txt").write_text(
        "q1 0 p1 3\nq1 0 p3 0\nq1 0 p4 0\nq1 0 p9 2\n"   # p9 has no text: left out
        "q2 0 p2 2\nq2 0 p5 0\nq2 0 p6 0\nq2 0 p1 1\n")
    out = tmp_path / "m"
    result = runner.invoke(app, ["train", "--encoder", tiny_encoder, "--dataset", "trec-dl-21", "--trec-dir",
                                 str(folder), "--cache-dir", str(cache), "-o", str(out), "--head", "quantum",
                                 "--dim", "8", "--max-length", "32", "--negatives", "2", "--batch-size", "2", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 1  # two (query, positive) examples, batch 2
    config = json.loads((out / "qcompress.json").read_text())
    assert config["training"]["dataset"] == "trec-dl-21" and config["training"]["trec_dir"] == str(folder)
    load_model(out)

    result = runner.invoke(app, ["train", "--encoder", tiny_encoder, "--dataset", "trec-dl-21", "-o",
                                 str(tmp_path / "n")], env={"QCOMPRESS_TREC_DIR": ""})
    assert result.exit_code == 1 and "QCOMPRESS_TREC_DIR" in result.stderr and not (tmp_path / "n").exists()


def test_without_output_the_folder_is_models_variant_or_head_and_encoder(tiny_encoder, beir, cache, tmp_path,
                                                                          monkeypatch):
    """No -o: models/<variant or head>-<encoder name>, then -2, -3... printed on stderr at the start."""
    from qcompress.cli.train import default_output

    monkeypatch.chdir(tmp_path)
    run = args(tiny_encoder, beir, cache, "unused", "--max-steps", "1")
    run = run[:run.index("-o")] + run[run.index("-o") + 2:]  # drop -o
    name = Path(tiny_encoder).name
    for expected in (f"models/quantum-{name}", f"models/quantum-{name}-2"):
        result = runner.invoke(app, run)
        assert result.exit_code == 0, result.output
        assert result.stderr.startswith(f"writing {expected} (no -o given)\n")
        assert (tmp_path / expected / "qcompress.json").is_file()
    (tmp_path / f"models/quantum-{name}-3.ckpt").mkdir()  # an interrupted run: taken, and the one to resume
    assert default_output(None, "quantum", tiny_encoder, resume=False) == f"models/quantum-{name}-4"
    assert default_output(None, "quantum", tiny_encoder, resume=True) == f"models/quantum-{name}-3"
    assert default_output("QBFEC", None, None, resume=False) == "models/qbfec-all-MiniLM-L6-v2"
    resumed = runner.invoke(app, [*run, "--resume"])  # the first line says which folder, before any work
    assert resumed.stderr.startswith(f"resuming models/quantum-{name}-3 (no -o given)\n"), resumed.output
    result = runner.invoke(app, ["train", "--encoder", tiny_encoder, "--head", "linear", "--resume"])
    assert result.exit_code == 2 and "no interrupted run under models/linear-" in result.stderr
