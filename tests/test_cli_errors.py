"""Errors a user can fix read as one `qcompress: error:` line; a bug in qcompress says so (`internal error`) and
shows its traceback with --debug or $QCOMPRESS_DEBUG; a missing package names the pip command that installs it."""

import math
import sys

import pytest
import torch
from typer.testing import CliRunner

from qcompress.cli import app
from qcompress.errors import InputError, MissingDependency

runner = CliRunner()
COUNT = ["count-params", "--in-dim", "8", "--out-dim", "4"]  # the quickest command that calls into the library


def _raising(error: Exception):
    def library_call(*args, **kwargs):
        raise error

    return library_call


@pytest.mark.parametrize("error", [ValueError("shapes (3,) and (4,) differ"), KeyError("in_dim"),
                                   RuntimeError("boom\nsecond line")])
def test_a_library_bug_is_an_internal_error_in_one_line(monkeypatch, error):
    """A ValueError that is not an InputError is a bug, not bad input: it must not read as the user's mistake."""
    monkeypatch.setattr("qcompress.heads.sizes.quantum_head_num_parameters", _raising(error))
    result = runner.invoke(app, COUNT)
    assert result.exit_code == 1 and result.stdout == ""
    message = str(error).splitlines()[0]
    assert result.stderr.splitlines() == [
        f"qcompress: internal error: {type(error).__name__}: {message} (please report it; run with --debug for the "
        "traceback)"]


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback_of_an_internal_error(monkeypatch, how):
    monkeypatch.setattr("qcompress.heads.sizes.quantum_head_num_parameters", _raising(RuntimeError("boom")))
    if how == "flag":
        result = runner.invoke(app, ["--debug", *COUNT])
    else:
        result = runner.invoke(app, COUNT, env={"QCOMPRESS_DEBUG": "1"})
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "in count_params" in result.stderr and lines[-2] == "RuntimeError: boom"
    assert lines[-1].startswith("qcompress: internal error: RuntimeError: boom")
    # --debug is reset by each run: the next one without it prints the one line again
    assert runner.invoke(app, COUNT).stderr.count("\n") == 1


def test_bad_input_stays_one_line_even_with_debug(monkeypatch):
    monkeypatch.setattr("qcompress.heads.sizes.quantum_head_num_parameters",
                        _raising(InputError("out of range", file="x.json", field="dim")))
    for args in (COUNT, ["--debug", *COUNT]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1
        assert result.stderr.splitlines() == ['qcompress: error: x.json: field "dim": out of range']


def test_ctrl_c_and_usage_errors_keep_their_exit_codes(monkeypatch):
    assert runner.invoke(app, ["count-params", "--in-dim", "0"]).exit_code == 2
    monkeypatch.setattr("qcompress.heads.sizes.quantum_head_num_parameters", _raising(KeyboardInterrupt()))
    result = runner.invoke(app, COUNT)
    assert result.exit_code == 130 and result.stderr.splitlines() == ["qcompress: interrupted"]


def test_a_missing_optional_package_names_the_pip_command(tmp_path, monkeypatch):
    from qcompress.formats import EmbeddingWriter

    corpus = tmp_path / "c.parquet"
    with EmbeddingWriter(corpus, dim=2, metadata={"encoder": "x", "head": "none", "similarity": "fidelity"}) as w:
        w.write(["a", "b"], torch.full((2, 2), math.pi / 4))
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    result = runner.invoke(app, ["index", "build", str(corpus), "-o", str(tmp_path / "c.index")])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "qcompress: error: the approximate index needs faiss-cpu, which is not installed: pip install faiss-cpu"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.parquet"]


def test_a_missing_package_is_one_exception_type_everywhere(monkeypatch):
    """ray (an extra), ir_datasets and faiss (looked up when a feature needs them) raise the same type, an
    ImportError, whose `install` is the command to run."""
    from qcompress.data.irds import _import_ir_datasets
    from qcompress.ray_engine import require_ray
    from qcompress.recipes.peers_faiss import code_representation

    for module in ("ray", "ir_datasets", "faiss"):
        monkeypatch.setitem(sys.modules, module, None)
    cases = [(require_ray, "pip install 'qcompress-embeddings[ray]'"),
             (lambda: _import_ir_datasets("beir/scifact"), "pip install ir_datasets"),
             (lambda: code_representation("pq", torch.randn(300, 8), code_bytes=2), "pip install faiss-cpu")]
    for call, install in cases:
        with pytest.raises(MissingDependency) as caught:
            call()
        assert isinstance(caught.value, ImportError) and caught.value.install == install
        assert str(caught.value).endswith(f"which is not installed: {install}")


def test_a_broken_package_is_not_reported_as_missing(tmp_path, monkeypatch):
    """A package that is installed but fails to import one of its own dependencies is not ours to explain."""
    from qcompress.errors import require

    (tmp_path / "broken_package").mkdir()
    (tmp_path / "broken_package" / "__init__.py").write_text("import no_such_dependency_of_it\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError) as caught:
        require("broken_package", "this test")
    assert not isinstance(caught.value, MissingDependency) and caught.value.name == "no_such_dependency_of_it"
