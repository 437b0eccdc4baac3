"""`qcompress train`: success with --json, Ctrl-C and --resume, and one clear line for every kind of bad input."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from qcompress import load_model
from qcompress.cli import app
from qcompress.training import checkpoint_dir

from conftest import make_tiny_bert
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
    assert load_model(out).encode(["wing"], convert_to_tensor=True).shape == (1, 8)
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


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("qcompress: error: "), result.output
    return lines[0]


def test_overwrite_replaces_only_a_model_folder_or_a_checkpoint_folder(tiny_encoder, beir, cache, tmp_path):
    """Issue 14 item 7: --overwrite used to delete whatever the output folder held."""
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        line = one_error_line(runner.invoke(app, args(tiny_encoder, beir, cache, out, "--max-steps", "1", *extra)))
        assert "is not a qcompress model folder (no qcompress.json); it is never replaced" in line
    assert (out / "keep.txt").read_text() == "mine" and not checkpoint_dir(out).exists()

    model = tmp_path / "model"
    assert runner.invoke(app, args(tiny_encoder, beir, cache, model, "--max-steps", "1")).exit_code == 0
    line = one_error_line(runner.invoke(app, args(tiny_encoder, beir, cache, model, "--max-steps", "1")))
    assert "holds a model; pass --overwrite to replace it" in line
    result = runner.invoke(app, args(tiny_encoder, beir, cache, model, "--max-steps", "2", "--overwrite", "--json"))
    assert result.exit_code == 0 and json.loads(result.stdout)["steps"] == 2

    # The checkpoint folder beside the output: replaced only when it holds nothing but a run's files.
    ckpt = checkpoint_dir(tmp_path / "n")
    ckpt.mkdir()
    (ckpt / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"], ["--resume"]):
        line = one_error_line(runner.invoke(app, args(tiny_encoder, beir, cache, tmp_path / "n", *extra)))
        assert f"{ckpt} is where this run keeps its checkpoints, and it holds other files; it is never replaced" in line
    assert (ckpt / "notes.txt").read_text() == "mine" and not (tmp_path / "n").exists()


def test_a_run_killed_before_its_first_checkpoint_starts_over(wide_encoder, long_beir, cache, tmp_path):
    """Issue 14 item 8: after a SIGKILL before the first checkpoint, `train` said "pass --resume" and
    `train --resume` said "run without --resume"."""
    out = tmp_path / "m"
    command = slow_args(wide_encoder, long_beir, cache, out, "--epochs", "1000")
    process = start(command)
    try:
        wait_for(process, lambda: (checkpoint_dir(out) / "train_log.jsonl").is_file(), poll=0.005)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        process.kill()
    assert checkpoint_dir(out).is_dir() and not list(checkpoint_dir(out).glob("step-*/state.json"))
    line = one_error_line(runner.invoke(app, [*command, "--resume"]))
    assert "no checkpoint in" in line and "(the run stopped before its first); run without --resume to start" in line
    result = runner.invoke(app, [*command, "--max-steps", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 1 and not checkpoint_dir(out).exists()


def test_a_second_run_writing_the_same_output_is_refused(wide_encoder, long_beir, cache, tmp_path):
    """Issue 27 item 7: two concurrent runs shared OUT.ckpt and the loser failed with a missing-file error. A run
    holds OUT.ckpt/lock (flock) for its life; a second one is refused in one line and changes nothing."""
    out = tmp_path / "m"
    command = slow_args(wide_encoder, long_beir, cache, out, "--epochs", "1000")
    process = start(command)
    try:
        wait_for(process, lambda: (checkpoint_dir(out) / "train_log.jsonl").is_file(), poll=0.005)
        for extra in ([], ["--overwrite"], ["--resume"]):
            line = one_error_line(runner.invoke(app, [*command, "--max-steps", "1", *extra]))
            assert f"{out}: another qcompress run is writing this model (it holds the lock " \
                   f"{checkpoint_dir(out) / 'lock'})" in line
        assert process.poll() is None  # the first run goes on
    finally:
        process.kill()
        process.communicate(timeout=60)
    assert not out.exists()
    result = runner.invoke(app, [*command, "--max-steps", "1", "--json"])  # the killed run's lock went with it
    assert result.exit_code == 0, result.output
    assert not checkpoint_dir(out).exists()


# -- Ctrl-C at any moment of a step ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide_encoder(tmp_path_factory) -> str:
    """A random BERT with hidden size 256: steps long enough (~0.3 s on one core) for a signal to land inside."""
    return str(make_tiny_bert(tmp_path_factory.mktemp("wide-bert"), hidden=256, layers=3))


@pytest.fixture(scope="module")
def long_beir(tmp_path_factory) -> Path:
    """24 queries, each with one of 60 documents of 40-60 words: 3 steps of 8 examples per epoch."""
    rng = random.Random(0)
    words = [*"the of a and in to is for flow on with at by from wing boundary layer pressure heat".split(),
             *"lift drag shock mach vortex laminar turbulent nozzle airfoil supersonic".split()]
    docs = {f"d{i}": " ".join(rng.choice(words) for _ in range(40 + i % 20)) for i in range(60)}
    queries = {f"q{i}": " ".join(rng.choice(words) for _ in range(6)) for i in range(24)}
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{(i * 7) % 60}\t1\n" for i in range(24))
    return write_beir(tmp_path_factory.mktemp("long") / "beir", docs=docs, queries=queries, splits={"train": qrels})


def slow_args(encoder, dataset, cache, out, *extra) -> list[str]:
    """Two of three layers train (through the frozen prefix, the default), with dropout; a linear head."""
    return ["train", "--encoder", encoder, "--dataset", str(dataset), "--cache-dir", str(cache), "-o", str(out),
            "--head", "linear", "--dim", "16", "--train-layers", "2", "--lr", "1e-3", "--max-length", "128",
            "--negatives", "5", "--batch-size", "8", "--seed", "3", *extra]


def start(command: list[str]) -> subprocess.Popen:
    """`python -m qcompress COMMAND` with this process's number of threads (the same float sums: bit-equal runs).
    SIGINT acts as a terminal's Ctrl-C, also where this test runs with SIGINT ignored (then inherited)."""
    threads = str(torch.get_num_threads())
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return subprocess.Popen([sys.executable, "-m", "qcompress", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(process: subprocess.Popen, condition, timeout: float = 300, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(poll)


def step_rows(folder: Path) -> list[dict]:
    path = folder / "train_log.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")] if path.is_file() else []
    return [r for r in rows if r["kind"] == "step"]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{path.relative_to(folder)}:{k}": v for path in sorted(folder.rglob("*.safetensors"))
            for k, v in load_file(str(path)).items()}


@pytest.fixture(scope="module")
def uninterrupted(wide_encoder, long_beir, cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "m"
    result = runner.invoke(app, slow_args(wide_encoder, long_beir, cache, out, "--epochs", "2"))  # 6 steps
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.7], ids=["at-the-boundary", "early-in-a-step", "late-in-a-step"])
def test_ctrl_c_at_any_moment_of_a_step_resumes_to_the_same_model(wide_encoder, long_beir, cache, uninterrupted,
                                                                   tmp_path, fraction):
    """Issue 14 item 4: a real SIGINT `fraction` of a step's duration after step 2 was logged (so inside step 3,
    in its forward or backward pass, or at its start); the resumed run must equal an uninterrupted one bit for
    bit: weights and every logged loss. Before, the checkpoint held the random-number state of the cut step."""
    full, out, stop = uninterrupted, tmp_path / "resumed", ["--epochs", "2"]
    process = start(slow_args(wide_encoder, long_beir, cache, out, *stop))
    try:
        wait_for(process, lambda: len(step_rows(checkpoint_dir(out))) >= 2)
        time.sleep(fraction * step_rows(checkpoint_dir(out))[1]["seconds"])
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    step = int(re.search(r"checkpoint of step (\d+) in ", stderr)[1])
    assert 2 <= step < 6
    result = runner.invoke(app, slow_args(wide_encoder, long_beir, cache, out, *stop, "--resume"))
    assert result.exit_code == 0, result.output
    a, b = weights(full), weights(out)
    assert a.keys() == b.keys() and any(k.startswith("encoder/") for k in a)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert [r["loss"] for r in step_rows(out)] == [r["loss"] for r in step_rows(full)]


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
