"""Issue 27: special files as outputs, full disks, closed pipes, odd input; each a correct result or one error
line, never a traceback (the other items are tested beside their modules: test_ann, test_cache,
test_frozen_prefix, test_training, test_cli_train, test_cli_search)."""

import json
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

from qcompress.cli import app
from qcompress.formats import read_embeddings
from qcompress.model import build_model

runner = CliRunner()

DOCS = {"d1": "the flow on a wing", "d2": "heat transfer in a boundary layer", "d3": "pressure of the flow",
        "d4": "what are the boundary layer effects", "d5": "a wing"}
QUERIES = {"q1": "wing flow", "q2": "heat"}


def jsonl(path, records):
    path.write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in records.items()))
    return path


@pytest.fixture(scope="module")
def files(tiny_encoder, tmp_path_factory):
    """A model folder, its texts and the Parquet files it compressed (queries q.parquet, corpus c.parquet)."""
    root = tmp_path_factory.mktemp("robust")
    build_model(tiny_encoder, head="quantum", dim=8, max_length=32).save(root / "m")
    jsonl(root / "docs.jsonl", DOCS), jsonl(root / "queries.jsonl", QUERIES)
    for source, out in (("docs.jsonl", "c.parquet"), ("queries.jsonl", "q.parquet")):
        result = runner.invoke(app, ["compress", str(root / source), "--model", str(root / "m"), "-o", str(root / out)])
        assert result.exit_code == 0, result.output
    return root


def one_error_line(result) -> str:
    """The single stderr line of a failed command (no traceback, nothing on stdout)."""
    assert result.exit_code in (1, 2), result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("qcompress: error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def read_fifo_in_background(path):
    """Start a reader of the FIFO `path`; join() the returned thread, then its bytes are in the returned list."""
    got = []
    reader = threading.Thread(target=lambda: got.append(open(path, "rb").read()), daemon=True)
    reader.start()
    return reader, got


# -- item 3: -o on special files ------------------------------------------------------------------------------------

def test_outputs_are_written_through_pipes_and_devices_never_replaced(files, tmp_path):
    fifo = tmp_path / "run.fifo"
    os.mkfifo(fifo)
    reader, got = read_fifo_in_background(fifo)
    result = runner.invoke(app, ["score", str(files / "q.parquet"), str(files / "c.parquet"), "--top-k", "3",
                                 "-o", str(fifo)])
    reader.join(30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still the pipe
    expected = runner.invoke(app, ["score", str(files / "q.parquet"), str(files / "c.parquet"), "--top-k", "3"])
    assert got[0].decode() == expected.stdout and got[0].count(b"\n") == 6

    # compress --force into a pipe: the reader gets the whole Parquet file; nothing is left beside the pipe
    reader, got = read_fifo_in_background(fifo)
    result = runner.invoke(app, ["compress", str(files / "docs.jsonl"), "--model", str(files / "m"), "--force",
                                 "-o", str(fifo)])
    reader.join(30)
    assert result.exit_code == 0, result.output
    (tmp_path / "copy.parquet").write_bytes(got[0])
    assert read_embeddings(tmp_path / "copy.parquet").ids == list(DOCS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.parquet", "run.fifo"]  # no run.fifo.partial/

    # A character device: written through (no --force needed: nothing is replaced), still the device. First one
    # made here (root only), so that a qcompress that replaces devices fails this test before it reaches /dev/null.
    devices = [os.devnull]
    if os.geteuid() == 0:
        devices.insert(0, str(tmp_path / "null-device"))
        os.mknod(devices[0], stat.S_IFCHR | 0o666, os.makedev(1, 3))
    for device in devices:
        for args in (["score", str(files / "q.parquet"), str(files / "c.parquet")],
                     ["compress", str(files / "docs.jsonl"), "--model", str(files / "m")]):
            result = runner.invoke(app, [*args, "-o", device])
            assert stat.S_ISCHR(os.stat(device).st_mode), f"{args[0]} replaced {device}"
            assert result.exit_code == 0, result.output


def test_a_socket_or_a_file_where_a_folder_goes_is_refused_in_one_line(files, tmp_path):
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        line = one_error_line(runner.invoke(app, ["score", str(files / "q.parquet"), str(files / "c.parquet"),
                                                  "-o", str(sock_path)]))
        assert f"-o {sock_path}: is a socket, not a file" in line
        line = one_error_line(runner.invoke(app, ["compress", str(files / "docs.jsonl"), "--model", str(files / "m"),
                                                  "--force", "-o", str(sock_path)]))
        assert "is a socket, not a file" in line
        assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
    fifo = tmp_path / "index.fifo"
    os.mkfifo(fifo)
    line = one_error_line(runner.invoke(app, ["index", "build", str(files / "c.parquet"), "-o", str(fifo), "--force"]))
    assert "exists and is not a folder" in line and stat.S_ISFIFO(os.stat(fifo).st_mode)


# -- item 4: score --index with --top-k above the candidates found -------------------------------------------------

def test_score_index_with_top_k_above_the_candidates_found(files, tmp_path):
    index = tmp_path / "c.index"
    assert runner.invoke(app, ["index", "build", str(files / "c.parquet"), "-o", str(index), "--nlist", "2"]).exit_code == 0
    result = runner.invoke(app, ["score", str(files / "q.parquet"), "--index", str(index), "--nprobe", "1",
                                 "--rerank", "1", "--recall-queries", "0"])  # --top-k 1000 by default
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    per_query = {q: [row for row in lines if row[0] == q] for q in QUERIES}
    assert all(1 <= len(rows) < len(DOCS) for rows in per_query.values()), per_query  # one cell's documents
    assert all([int(row[3]) for row in rows] == list(range(1, len(rows) + 1)) for rows in per_query.values())
    assert "probed cells held fewer than 5 documents: their rankings are shorter" in result.stderr


# -- item 8: a model folder whose files leave it through symbolic links ------------------------------------------

def test_a_model_folder_whose_files_are_links_leaving_it_is_refused(tiny_encoder, tmp_path):
    import shutil

    from qcompress.errors import InputError
    from qcompress.model import load_model

    elsewhere = tmp_path / "elsewhere"
    build_model(tiny_encoder, head="quantum", dim=8, max_length=32).save(elsewhere)
    folder = tmp_path / "m"
    shutil.copytree(elsewhere, folder, ignore=shutil.ignore_patterns("encoder"))
    (folder / "encoder").symlink_to(elsewhere / "encoder")  # the encoder folder: a link out of the model folder
    texts = jsonl(tmp_path / "x.jsonl", {"a": "wing"})
    line = one_error_line(runner.invoke(app, ["compress", str(texts), "--model", str(folder), "-o", "-"]))
    assert f"{folder}: encoder is a symbolic link that leaves the model folder (to {elsewhere / 'encoder'})" in line
    (folder / "encoder").unlink()
    shutil.copytree(elsewhere / "encoder", folder / "encoder")
    (folder / "encoder" / "model.safetensors").unlink()  # one file of it
    (folder / "encoder" / "model.safetensors").symlink_to(elsewhere / "encoder" / "model.safetensors")
    (folder / "head.safetensors").unlink()
    (folder / "head.safetensors").symlink_to(elsewhere / "head.safetensors")
    for name in ("head.safetensors", "encoder/model.safetensors"):
        with pytest.raises(InputError, match=f"{name} is a symbolic link that leaves the model folder"):
            load_model(folder)
        (folder / name).unlink()
        shutil.copy(elsewhere / name, folder / name)
    (folder / "encoder" / "weights-link.safetensors").symlink_to("model.safetensors")  # a link inside: fine
    assert load_model(folder).encode(["wing"]).shape == (1, 8)

    # The Hugging Face cache's own layout: a snapshot's files are links into its repository's blobs/
    repo = tmp_path / "hub" / "models--org--name"
    snapshot = repo / "snapshots" / ("a" * 40)
    shutil.copytree(folder, repo / "blobs")
    for path in sorted((repo / "blobs").rglob("*")):
        target = snapshot / path.relative_to(repo / "blobs")
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.path.relpath(path, target.parent))
    assert load_model(snapshot).encode(["wing"]).shape == (1, 8)


# -- item 9: one line, never a traceback or an "internal error" ----------------------------------------------------

def qcompress_process(args, *, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, before=None, env=None):
    """Run `python -m qcompress ARGS` in a process of its own (closed descriptors, limits and full devices cannot
    be made under CliRunner); `before` runs in the child before qcompress starts. Returns (exit code, stderr)."""
    process = subprocess.run([sys.executable, "-m", "qcompress", *args], stdin=stdin, stdout=stdout,
                             stderr=subprocess.PIPE, text=True, preexec_fn=before, timeout=300,
                             env=dict(os.environ, **(env or {})))
    return process.returncode, process.stderr


def single_line(code: int, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(("compressing", "encoding"))]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("qcompress: error: "), (code, stderr)
    return lines[0]


def test_a_full_device_and_a_file_size_limit_are_one_line(files, tmp_path):
    with open("/dev/full", "w") as full:  # written through the shell's way (open, then write), never replaced
        line = single_line(*qcompress_process(["compress", str(files / "docs.jsonl"), "--model", str(files / "m"),
                                               "-o", "-", "--no-cache"], stdout=full))
    assert "cannot write the output: No space left on device" in line

    def small_files():  # writes past 4 KiB fail with EFBIG (SIGXFSZ ignored, as a shell's ulimit -f leaves it)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    big = jsonl(tmp_path / "big.jsonl", {f"d{i}": f"text number {i}" for i in range(300)})
    out = tmp_path / "big.parquet"
    line = single_line(*qcompress_process(["compress", str(big), "--model", str(files / "m"), "-o", str(out),
                                           "--no-cache"], before=small_files))
    assert "File too large" in line and not out.exists()


def test_train_s_final_save_past_a_file_size_limit_is_one_line(tiny_encoder, tmp_path):
    from test_training import write_beir

    def limit():  # the checkpoints (a few KiB) fit, the encoder's weights (~170 KiB) do not
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (96 << 10, 96 << 10))

    data = write_beir(tmp_path / "beir")
    out = tmp_path / "model"
    line = single_line(*qcompress_process(
        ["train", "--encoder", tiny_encoder, "--dataset", str(data), "--head", "quantum", "--dim", "8",
         "--max-length", "32", "--negatives", "3", "--batch-size", "2", "--max-steps", "1",
         "--cache-dir", str(tmp_path / "cache"), "-o", str(out)], before=limit))
    assert "File too large" in line and not out.exists()


def test_closed_stdin_and_stdout_are_one_line(files):
    line = single_line(*qcompress_process(["compress", "-", "--model", str(files / "m"), "-o", "x.parquet"],
                                          before=lambda: os.close(0)))
    assert "<stdin>: is closed: nothing to read" in line
    for args in (["compress", str(files / "docs.jsonl"), "--model", str(files / "m"), "-o", "-"],
                 ["score", str(files / "q.parquet"), str(files / "c.parquet")]):
        line = single_line(*qcompress_process(args, before=lambda: os.close(1)))
        assert "stdout is closed: nowhere to write the results" in line


def test_a_cache_folder_that_is_a_file_is_one_line(files, tmp_path):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    compress = ["compress", str(files / "docs.jsonl"), "--model", str(files / "m"), "-o", "-"]
    for args, env in (([*compress, "--cache-dir", str(not_a_folder)], {}),
                      ([*compress, "--cache-dir", str(not_a_folder / "below")], {}),
                      (compress, {"QCOMPRESS_CACHE": str(not_a_folder)})):
        line = one_error_line(runner.invoke(app, args, env=env))
        assert f"{not_a_folder}: the cache folder is a file" in line or "is a file, not a folder" in line, line


def test_a_permute_mixing_with_bad_indexes_is_refused_naming_its_file(tiny_encoder, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    build_model(tiny_encoder, head="quantum", dim=8, max_length=32, mixing="permute").save(tmp_path / "m")
    weights = tmp_path / "m" / "mixing.safetensors"
    good = load_file(str(weights))
    texts = jsonl(tmp_path / "t.jsonl", {"a": "wing"})
    for name, order in (("out of range", torch.arange(32) + 1), ("negative", torch.arange(32) - 1),
                        ("fractional", torch.arange(32) + 0.5), ("repeated", torch.zeros(32, dtype=torch.long))):
        save_file(dict(good, order=order), str(weights))
        line = one_error_line(runner.invoke(app, ["compress", str(texts), "--model", str(tmp_path / "m"), "-o", "-"]))
        assert f"{weights}: not the fitted permute mixing of the model (`order` must hold each of 0..31 once" \
               in line, (name, line)


def test_a_lone_surrogate_and_json_nested_too_deep_are_one_line_naming_the_line(files, tmp_path):
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": "half \\udc80 a pair"}\n')
    line = one_error_line(runner.invoke(app, ["compress", str(odd), "--model", str(files / "m"), "-o", "-"]))
    assert f'{odd}:2: field "text": holds a lone surrogate' in line
    odd.write_text('{"_id": "a", "text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    line = one_error_line(runner.invoke(app, ["compress", str(odd), "--model", str(files / "m"), "-o", "-"]))
    assert f"{odd}:1: malformed JSON (nested too deeply" in line
    config = tmp_path / "m"
    build_model(str(files / "m" / "encoder"), head="none", similarity="fidelity", max_length=32).save(config)
    (config / "qcompress.json").write_text("[" * 100_000 + "]" * 100_000)
    line = one_error_line(runner.invoke(app, ["compress", str(files / "docs.jsonl"), "--model", str(config), "-o", "-"]))
    assert "qcompress.json" in line and "nested too deeply" in line


# -- item 10: ids, extreme cosines, cut-off measures, recipes ------------------------------------------------------

def test_ids_are_valid_by_one_rule_that_compress_and_score_share(files, tmp_path):
    """Ids are non-empty strings without whitespace or control characters, of any length and script; `²` and a
    5,000-digit id go through compress and score; a Parquet file with an id that breaks the rule is refused naming
    the file, row and id (it used to fail in score's run writer, naming no file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    long_id = "7" * 5000
    texts = tmp_path / "odd-ids.jsonl"
    texts.write_text(json.dumps({"_id": "²", "text": "wing"}) + "\n" + json.dumps({"_id": long_id, "text": "heat"})
                     + "\n" + json.dumps({"_id": "10", "text": "flow"}) + "\n")
    out = tmp_path / "odd.parquet"
    assert runner.invoke(app, ["compress", str(texts), "--model", str(files / "m"), "-o", str(out)]).exit_code == 0
    result = runner.invoke(app, ["score", str(out), str(out), "--top-k", "3"])
    assert result.exit_code == 0, result.output
    assert {line.split()[0] for line in result.stdout.splitlines()} == {"²", long_id, "10"}
    for bad, why in (("a b", "whitespace"), ("a\u0007b", "control character")):
        line = one_error_line(runner.invoke(app, ["compress", str(jsonl(tmp_path / "bad.jsonl", {bad: "x"})),
                                                  "--model", str(files / "m"), "-o", "-"]))
        assert f'bad.jsonl:1: field "_id"' in line and why in line, line
        table = pq.read_table(out)
        ids = pa.array(["²", bad, "10"])
        pq.write_table(table.set_column(0, pa.field("id", pa.string(), nullable=False), ids), tmp_path / "bad.parquet")
        line = one_error_line(runner.invoke(app, ["score", str(out), str(tmp_path / "bad.parquet")]))
        assert f"{tmp_path / 'bad.parquet'}: field \"id\": row 2 (id {bad!r})" in line and why in line, line
    number = tmp_path / "number.jsonl"
    number.write_text('{"_id": ' + long_id + ', "text": "wing"}\n')  # a JSON number past Python's 4,300 digits
    line = one_error_line(runner.invoke(app, ["compress", str(number), "--model", str(files / "m"), "-o", "-"]))
    assert f"{number}:1: malformed JSON (a number with more than" in line


def test_cosine_of_vectors_with_extreme_norms_is_their_cosine(tmp_path):
    import math

    import torch

    from qcompress.formats import EmbeddingWriter
    from qcompress.search import search_parquet, topk_cosine
    from qcompress.similarity import get_similarity

    docs = torch.tensor([[3e38, 1e38, 0.0], [1e-30, 2e-30, 0.0], [0.0, 0.0, 0.0], [1e-42, 0.0, 1e-42]])
    query = torch.tensor([[1.0, 2.0, 0.0]])
    expected = torch.tensor([5 / math.sqrt(50), 1.0, 0.0, 1 / math.sqrt(10)])  # zero vectors score 0
    cosine = get_similarity("cosine")
    assert torch.allclose(cosine.pairwise(query, docs)[0], expected, atol=1e-6)
    assert torch.allclose(cosine.paired(query.expand(4, 3), docs), expected, atol=1e-6)
    scores, rows = topk_cosine(query, docs, 4)
    assert rows.tolist() == [[1, 0, 3, 2]] and torch.allclose(scores[0], expected[[1, 0, 3, 2]], atol=1e-6)
    path = tmp_path / "v.parquet"
    with EmbeddingWriter(path, dim=3, metadata={"similarity": "cosine"}, column="vectors") as writer:
        writer.write(["a", "b", "zero", "tiny"], docs)
    scores, ids = search_parquet(query, path, 4)
    assert ids == [["b", "a", "tiny", "zero"]] and torch.allclose(scores[0], expected[[1, 0, 3, 2]], atol=1e-6)


def test_a_cutoff_deeper_than_top_k_is_warned(tiny_encoder, tmp_path):
    from test_training import write_beir

    data = write_beir(tmp_path / "beir")
    result = runner.invoke(app, ["evaluate", "--encoder", tiny_encoder, "--head", "none", "--similarity", "cosine",
                                 "--dataset", str(data), "--top-k", "3", "--metric", "R@10", "--metric", "nDCG@3",
                                 "--max-length", "32", "--json"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == ["qcompress: warning: R@10 counts the top 10 documents of each query, but --top-k 3 ranks only "
                        "3: the others count as not retrieved (raise --top-k to 10 for R@10 itself)"], result.stderr


def test_an_invalid_toml_recipe_names_its_file(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('name = "x"\n[profiles\n')
    line = one_error_line(runner.invoke(app, ["recipe", str(recipe)]))
    assert f"{recipe}: not valid TOML (Expected ']'" in line and "line 2" in line
