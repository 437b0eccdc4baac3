"""Scaling out (issue 7): `compress --engine ray` (Ray Data actor pool) and `torchrun ... qcompress train` (gloo).

Ray tests need the `ray` extra (in `dev`); they share one 2-CPU local Ray instance per module. The torchrun
tests start 2 CPU processes with the tiny random BERT.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer
from typer.testing import CliRunner

from qcompress import load_model
from qcompress.cli import app
from qcompress.formats import read_embeddings
from qcompress.model import build_model
from qcompress.training import checkpoint_dir

from test_training import write_beir

runner = CliRunner()
WORDS = "the flow on a wing heat transfer in boundary layer pressure of what are effects at by from".split()


def docs(n: int) -> list[dict]:
    """n documents of varied length (so that batches pad differently in the two engines)."""
    rng = np.random.default_rng(0)
    return [{"_id": f"d{i}", "text": " ".join(rng.choice(WORDS, size=3 + i % 40))} for i in range(n)]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[dev]')")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_ray_angles_equal_the_local_path_and_score_reads_the_folder(ray_cluster, tiny_encoder, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs(300)))
    model = ["--encoder", tiny_encoder, "--head", "none", "--similarity", "fidelity", "--max-length", "64"]
    local, folder = tmp_path / "local.parquet", tmp_path / "ray"
    assert runner.invoke(app, ["compress", str(corpus), *model, "-o", str(local)]).exit_code == 0
    result = runner.invoke(app, ["compress", str(corpus), *model, "-o", str(folder), "--engine", "ray",
                                 "--num-workers", "2", "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "cache" in result.stderr and "not used with --engine ray" in result.stderr  # and not created (below)
    assert "wrote 300 rows" in result.stderr and "2 worker(s)" in result.stderr and result.stdout == ""

    a, b = read_embeddings(local), read_embeddings(folder)
    assert b.ids == a.ids  # input order: the files are named by their first row
    assert torch.allclose(a.values, b.values, atol=1e-5, rtol=0)
    assert a.metadata == b.metadata  # same model id, encoder, dim, encoding, column, version
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) > 2 and all(f.startswith("part-") and f.endswith(".parquet") for f in files)
    assert pq.read_schema(local) == pq.read_schema(folder / files[0])  # same schema and key-value metadata
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "local.parquet", "ray"]  # no temp left

    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "q1", "text": "wing flow"}\n{"_id": "q2", "text": "boundary layer heat"}\n')
    q = tmp_path / "q.parquet"
    assert runner.invoke(app, ["compress", str(queries), *model, "-o", str(q)]).exit_code == 0
    run_local = runner.invoke(app, ["score", str(q), str(local), "--top-k", "5"])
    run_ray = runner.invoke(app, ["score", str(q), str(folder), "--top-k", "5"])
    assert run_ray.exit_code == 0, run_ray.output
    ranked = lambda out: [line.split()[:3] for line in out.splitlines()]  # noqa: E731
    assert ranked(run_ray.stdout) == ranked(run_local.stdout) and len(ranked(run_ray.stdout)) == 10


def _ray_worker_pids() -> list[int]:
    """PIDs of Ray Data's map workers on this machine (their process title names the actor class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"MapWorker" in title:
                pids.append(int(entry.name))
    return pids


def _kill_first_worker(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first map worker that appears, as an OOM kill or a lost node would."""
    before = set(_ray_worker_pids())
    while not stop.is_set():
        new = [pid for pid in _ray_worker_pids() if pid not in before]
        if new:
            os.kill(new[0], signal.SIGKILL)
            killed.append(new[0])
            return
        time.sleep(0.02)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray's worker processes through /proc")
def test_a_killed_actor_is_restarted_and_no_row_is_lost(ray_cluster, tiny_encoder, tmp_path):
    """Parquet input, a trained-head model, uint8 codes; a worker process is killed with SIGKILL mid-job."""
    records = docs(400)
    table = pa.table({"id": [d["_id"] for d in records], "text": [d["text"] for d in records]})
    corpus = tmp_path / "corpus.parquet"
    pq.write_table(table, corpus)
    model_dir = tmp_path / "model"
    build_model(tiny_encoder, head="quantum", dim=8, max_length=64).save(model_dir)
    out = tmp_path / "out"
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_worker, args=(stop, killed), daemon=True)
    killer.start()
    try:
        result = runner.invoke(app, ["compress", str(corpus), "--model", str(model_dir), "-o", str(out), "--uint8",
                                     "--engine", "ray", "--num-workers", "2"])
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker appeared to kill"
    assert result.exit_code == 0, result.output
    got = read_embeddings(out)
    assert got.ids == [d["_id"] for d in records] and got.encoding == "uint8"  # rows in = rows out, in order
    expected = load_model(model_dir).encode([d["text"] for d in records], convert_to_tensor=True)
    codes = np.rint(got.values.numpy() / math.pi * 255)
    assert np.abs(codes - np.rint(expected.numpy() / math.pi * 255)).max() <= 1


def test_a_failing_model_fails_the_job_in_one_line(ray_cluster, tiny_encoder, tmp_path, tmp_path_factory):
    """A tokenizer word without an embedding row makes every worker call raise. Not retried (it would raise again),
    reported with its cause, and no output."""
    from transformers import AutoTokenizer

    broken = shutil.copytree(tiny_encoder, tmp_path_factory.mktemp("broken") / "encoder")
    tokenizer = AutoTokenizer.from_pretrained(broken)
    tokenizer.add_tokens(["zzzz"])  # id = the vocabulary size: past the end of the embedding table
    tokenizer.save_pretrained(broken)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": "zzzz wing"}) + "\n" for i in range(4)))
    out = tmp_path / "out"
    result = runner.invoke(app, ["compress", str(corpus), "--encoder", str(broken), "--head", "none",
                                 "-o", str(out), "--engine", "ray", "--num-workers", "1"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("qcompress: error:")]
    assert len(errors) == 1 and "the Ray job failed after 0 of 4 rows (IndexError: index out of range" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def test_rows_in_must_equal_rows_out(tmp_path):
    from qcompress.ray_engine import _part_name, _verify
    from qcompress.formats import EmbeddingWriter

    for first, ids in ((0, ["a", "b"]), (3, ["d"])):  # rows 2 ("c") never written
        with EmbeddingWriter(tmp_path / _part_name(first), dim=2, metadata={}) as w:
            w.write(ids, np.zeros((len(ids), 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"wrote 3 rows for 4 input rows \(1 missing"):
        _verify(tmp_path, ["a", "b", "c", "d"], tmp_path / "out")


def test_engine_ray_without_ray_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "wing"}\n')
    result = runner.invoke(app, ["compress", str(corpus), "--encoder", "minilm", "--head", "none", "-o",
                                 str(tmp_path / "out"), "--engine", "ray"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "qcompress: error: --engine ray needs ray, which is not installed: pip install 'qcompress-embeddings[ray]'"]


def test_engine_options_are_checked(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "wing"}\n')
    base = ["compress", str(corpus), "--encoder", "minilm", "--head", "none", "-o", str(tmp_path / "o.parquet")]
    result = runner.invoke(app, [*base, "--num-workers", "2"])  # wrong usage: exit 2
    assert result.exit_code == 2 and "go with --engine ray" in result.stderr
    result = runner.invoke(app, [*base, "--engine", "spark"])
    assert result.exit_code == 2 and "'spark' is not one of 'local', 'ray'" in result.stderr


# -- torchrun ------------------------------------------------------------------------------------------------------


def train_args(tiny_encoder, beir, cache, out, *extra) -> list[str]:
    # 7 examples, global batch 4: batches of 4 and 3 (shards 2+2, then 2+1): uneven shards are weighted right.
    return ["train", "--encoder", tiny_encoder, "--dataset", str(beir), "--cache-dir", str(cache), "-o", str(out),
            "--head", "quantum", "--dim", "8", "--max-length", "32", "--negatives", "3", "--batch-size", "4",
            "--epochs", "2", "--seed", "7", "--variant", "QBFEC", *extra]


# `qcompress` with Ctrl-C after N steps in every process at once (a real SIGINT reaches the processes at different
# points): the step of qcompress.training.loop is wrapped.
CTRL_C_AFTER = """
import sys
from qcompress.cli import app
from qcompress.training import loop

steps, step = int(sys.argv[1]), loop._Run.step

def step_then_ctrl_c(run, batch):
    step(run, batch)
    if run.state["step"] == steps:
        raise KeyboardInterrupt

loop._Run.step = step_then_ctrl_c
app(sys.argv[2:], prog_name="qcompress")
"""


def torchrun(args: list[str], nproc: int = 2, ctrl_c_after: Path | None = None) -> subprocess.CompletedProcess:
    """`torchrun -m qcompress ARGS`, or with `ctrl_c_after` (a script of CTRL_C_AFTER) that script ARGS."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               *(["-m", "qcompress"] if ctrl_c_after is None else [str(ctrl_c_after)]), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_torchrun_two_processes_match_one_and_resume(tiny_encoder, tmp_path, tmp_path_factory):
    beir = write_beir(tmp_path / "beir", splits={"train": "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td5\t1\n"
                                                 "q2\td2\t1\nq3\td4\t3\nq4\td8\t1\nq4\td5\t2\nq5\td6\t1\n"})
    cache = tmp_path / "cache"
    one, two = tmp_path / "one", tmp_path / "two"
    result = runner.invoke(app, train_args(tiny_encoder, beir, cache, one, "--json"))
    assert result.exit_code == 0, result.output
    single = json.loads(result.stdout)
    assert single["examples"] == 7 and single["steps"] == 4

    # 2 processes, interrupted after 3 steps (rank 0 checkpoints), then resumed to the end.
    script = tmp_path_factory.mktemp("scripts") / "ctrl_c_after.py"
    script.write_text(CTRL_C_AFTER)
    stopped = torchrun(["3", *train_args(tiny_encoder, beir, cache, two)], ctrl_c_after=script)
    assert stopped.returncode != 0 and "--resume" in stopped.stderr, stopped.stderr[-2000:]
    assert not two.exists() and (checkpoint_dir(two) / "step-000000003").is_dir()
    assert (checkpoint_dir(two) / "rng-rank1.safetensors").is_file()
    resumed = torchrun(train_args(tiny_encoder, beir, cache, two, "--resume", "--json"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)  # one JSON object: only rank 0 prints
    assert summary["steps"] == 4 and not checkpoint_dir(two).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beir", "cache", "one", "two"]

    assert load_model(two).encode(["wing"], convert_to_tensor=True).shape == (1, 8)
    a, b = load_file(str(one / "head.safetensors")), load_file(str(two / "head.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5, rtol=0) for k in a)
    assert summary["final_loss"] == pytest.approx(single["final_loss"], abs=1e-5)
    losses = lambda folder: [json.loads(line)["loss"] for line in (folder / "train_log.jsonl").open()  # noqa: E731
                             if json.loads(line)["kind"] == "step"]
    assert losses(two) == pytest.approx(losses(one), abs=1e-5)  # the log holds the global batch's mean loss


def test_torchrun_refuses_in_batch_negatives(tiny_encoder, tmp_path, monkeypatch):
    """Under torchrun each process would see only its shard's documents: a different loss, so it is refused."""
    from qcompress.training import train

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="in_batch_negatives under torchrun"):
        train({"output": str(tmp_path / "m"), "encoder": tiny_encoder, "in_batch_negatives": True,
               "head": "quantum", "dim": 8, "device": "cpu"})


def test_torchrun_trains_the_top_layers_through_the_frozen_prefix_like_one_process(tiny_encoder, tmp_path):
    """Each process keeps the frozen layers' outputs of its own share of the texts; without dropout (which draws
    other masks in 2 processes than in one) the weights equal one process's within float round-off."""
    encoder = tmp_path / "no-dropout"
    AutoModel.from_pretrained(tiny_encoder, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0) \
        .save_pretrained(encoder)
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(encoder)
    beir, cache = write_beir(tmp_path / "beir"), tmp_path / "cache"
    one, two = tmp_path / "one", tmp_path / "two"
    args = lambda out: ["train", "--encoder", str(encoder), "--dataset", str(beir), "--cache-dir", str(cache),  # noqa
                        "-o", str(out), "--head", "linear", "--dim", "8", "--train-layers", "1", "--lr", "1e-3",
                        "--max-length", "32", "--negatives", "3", "--batch-size", "4", "--epochs", "2"]
    assert runner.invoke(app, args(one)).exit_code == 0
    result = torchrun(args(two))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((two / "qcompress.json").read_text())["training_result"]["frozen_prefix"] is True
    weights = lambda folder: {**load_file(str(folder / "head.safetensors")),  # noqa: E731
                              **load_file(str(folder / "encoder" / "model.safetensors"))}
    a, b = weights(one), weights(two)
    # The attention key bias has a zero gradient up to round-off, which Adam scales to lr-sized steps: left out.
    assert [k for k in a if not k.endswith("key.bias") and not torch.allclose(a[k], b[k], atol=1e-5, rtol=0)] == []
