"""Issue 27: special files as outputs, full disks, closed pipes, odd input; each a correct result or one error
line, never a traceback (the other items are tested beside their modules: test_ann, test_cache,
test_frozen_prefix, test_training, test_cli_train, test_cli_search)."""

import json
import os
import socket
import stat
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.parquet", "run.fifo"]

    # /dev/null: written through (no --force needed: nothing is replaced), still the device
    for args in (["score", str(files / "q.parquet"), str(files / "c.parquet")],
                 ["compress", str(files / "docs.jsonl"), "--model", str(files / "m")]):
        result = runner.invoke(app, [*args, "-o", os.devnull])
        assert result.exit_code == 0, result.output
        assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    if os.geteuid() == 0:  # a character device made here (root only): written through, not turned into a file
        device = tmp_path / "null-device"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        result = runner.invoke(app, ["score", str(files / "q.parquet"), str(files / "c.parquet"), "-o", str(device)])
        assert result.exit_code == 0 and stat.S_ISCHR(os.stat(device).st_mode), result.output


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
