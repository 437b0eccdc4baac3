"""`qcompress recipe`: the recipes' command line (python -m qcompress.recipes runs the same command), and recipe
values that become paths stay plain file names (issue 14, item 11)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from qcompress import recipes
from qcompress.cli import app
from qcompress.recipes import runner as recipe_runner
from test_training import write_beir

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_checkout(monkeypatch):
    """Runs record the checkout's commit and whether it had uncommitted changes (aggregating those is refused
    without --allow-dirty): the tests must not depend on the state of the developer's working tree."""
    monkeypatch.setattr(recipe_runner, "git_state", lambda: ("0000000", False))


TINY = """
name = "{name}"
title = "tiny"
[profiles.offline]
encoder = "{encoder}"
max_length = 32
evaluate = [{{ name = "tiny test", dataset = "{folder}", split = "test", protocol = "full", top_k = 100 }}]
plots = [{{ file = "{plot}", x = "bytes_per_vector" }}]
runs = [{{ kind = "encoder", similarity = ["cosine", "fidelity"] }}]
"""


def tiny_recipe(folder: Path, encoder: str, beir: Path, name: str = "tiny", plot: str = "bytes.png") -> Path:
    path = folder / "tiny.toml"
    path.write_text(TINY.format(name=name, encoder=encoder, folder=beir, plot=plot))
    return path


def test_recipe_dry_run_as_typed_and_as_python_m(capsys):
    """`qcompress recipe recipes/variants.toml --profile offline --dry-run` and `python -m qcompress.recipes` with
    the same arguments list the same runs."""
    result = runner.invoke(app, ["recipe", "recipes/variants.toml", "--profile", "offline", "--dry-run", "--out",
                                 "/nonexistent"])
    assert result.exit_code == 0, result.output
    typed = result.stdout.splitlines()
    assert len(typed) > 6 and all(line.startswith("variants/offline\ttodo\t") for line in typed)
    assert recipes.main([str(ROOT / "recipes/variants.toml"), "--dry-run", "--out", "/nonexistent"]) == 0
    assert capsys.readouterr().out.splitlines() == typed  # --profile offline is the default


def test_recipe_runs_aggregates_and_records_the_command(tiny_encoder, tmp_path):
    beir = write_beir(tmp_path / "beir")
    recipe = tiny_recipe(tmp_path, tiny_encoder, beir)
    out = tmp_path / "out"
    result = runner.invoke(app, ["recipe", str(recipe), "--profile", "offline", "--out", str(out),
                                 "--export", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    report = out / "tiny" / "offline" / "results.md"
    assert result.stdout.splitlines()[-1] == f"tiny/offline: {report}"
    assert f"Command: `qcompress recipe {recipe} --profile offline`" in report.read_text()
    assert sorted(p.name for p in (out / "tiny" / "offline" / "results").iterdir()) == [
        "encoder-similarity=cosine.json", "encoder-similarity=fidelity.json"]
    assert (out / "tiny" / "offline" / "bytes.png").is_file() and (tmp_path / "export" / "tiny-offline.jsonl").is_file()
    again = runner.invoke(app, ["recipe", str(recipe), "--out", str(out), "--dry-run"])
    assert again.stdout.count("\tdone\t") == 2


def test_runs_from_uncommitted_code_are_aggregated_only_with_allow_dirty(tiny_encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(recipe_runner, "git_state", lambda: ("abc1234", True))
    recipe = tiny_recipe(tmp_path, tiny_encoder, write_beir(tmp_path / "beir"))
    out = tmp_path / "out"
    refused = runner.invoke(app, ["recipe", str(recipe), "--out", str(out)])
    assert refused.exit_code == 1 and "uncommitted changes" in refused.stderr
    assert not (out / "tiny" / "offline" / "results.md").exists()
    allowed = runner.invoke(app, ["recipe", str(recipe), "--out", str(out), "--aggregate-only", "--allow-dirty"])
    assert allowed.exit_code == 0, allowed.output
    assert (out / "tiny" / "offline" / "results.md").is_file()


def test_recipe_device_runs_the_models_there_and_leaves_the_runs_identity(tiny_encoder, tmp_path, monkeypatch):
    """--device, as on every command that runs a model: the recipe's models run there; a run's results are the
    same computation wherever it ran, so a run done with --device cpu is done without it too."""
    devices = []
    build = recipe_runner.build_model
    monkeypatch.setattr(recipe_runner, "build_model", lambda *a, **k: devices.append(k.get("device")) or build(*a, **k))
    recipe = tiny_recipe(tmp_path, tiny_encoder, write_beir(tmp_path / "beir"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["recipe", str(recipe), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert devices == ["cpu", "cpu"]
    again = runner.invoke(app, ["recipe", str(recipe), "--out", str(out), "--dry-run"])
    assert again.stdout.count("\tdone\t") == 2


@pytest.mark.parametrize("field,change", [
    ("name", dict(name="../../escaped")),
    ("name", dict(name="a/b")),
    ("plots[0].file", dict(plot="../escaped.png")),
    ("plots[0].file", dict(plot="/tmp/escaped.png")),
])
def test_recipe_values_that_become_paths_are_plain_file_names(tiny_encoder, tmp_path, field, change):
    work = tmp_path / "work"
    work.mkdir()
    recipe = tiny_recipe(work, tiny_encoder, write_beir(tmp_path / "beir"), **change)
    out = work / "out"
    result = runner.invoke(app, ["recipe", str(recipe), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and f'{recipe}: field "{field}": ' in result.stderr
    assert "is not a plain file name" in result.stderr
    assert sorted(p.name for p in work.iterdir()) == ["tiny.toml"]  # nothing written, inside or outside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beir", "work"]


def test_a_profile_that_is_not_a_plain_name_is_refused(tiny_encoder, tmp_path):
    recipe = tiny_recipe(tmp_path, tiny_encoder, write_beir(tmp_path / "beir"))
    result = runner.invoke(app, ["recipe", str(recipe), "--profile", "../offline", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and 'field "profile": ' in result.stderr and not (tmp_path / "out").exists()


def test_load_recipe_refuses_a_name_that_leaves_the_output_folder(tmp_path):
    from qcompress.errors import InputError

    path = tmp_path / "r.toml"
    path.write_text('name = "../../escaped"\n[profiles.offline]\nevaluate = [{ dataset = "cranfield" }]\n')
    with pytest.raises(InputError, match=r'field "name": \'../../escaped\' is not a plain file name'):
        recipes.load_recipe(path)
