import json

from typer.testing import CliRunner

from qcompress.cli import app

runner = CliRunner()


def test_count_params_json_matches_spec_table():
    result = runner.invoke(app, ["count-params", "--in-dim", "768", "--out-dim", "384", "--out-dim", "256",
                                 "--out-dim", "128", "--out-dim", "64", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["quantum_head"] for r in rows] == [4608, 6144, 7680, 8448]
    assert [r["classical_head"] for r in rows] == [295296, 196864, 98432, 49216]
    assert [r["ratio"] for r in rows] == [64.08, 32.04, 12.82, 5.83]


def test_count_params_table():
    result = runner.invoke(app, ["count-params", "--out-dim", "256"])
    assert result.exit_code == 0, result.output
    assert "6,144" in result.stdout and "196,864" in result.stdout


def test_count_params_with_encoder_uses_its_hidden_size(tiny_encoder):
    result = runner.invoke(app, ["count-params", "--encoder", tiny_encoder, "--out-dim", "16", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["in_dim"] == 32
    assert out["rows"][0]["quantum_head"] == 12 * 1 * 16
    assert out["encoder_parameters"] > 10_000


def test_count_params_bad_sizes_one_line_error():
    result = runner.invoke(app, ["count-params", "--in-dim", "64", "--out-dim", "128"])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "larger than in_dim" in result.stderr
    result = runner.invoke(app, ["count-params", "--in-dim", "0"])  # wrong usage: exit 2, one line
    assert result.exit_code == 2 and "'--in-dim'" in result.stderr and result.stderr.count("\n") == 1
    result = runner.invoke(app, ["count-params", "--out-dim", "0"])
    assert result.exit_code == 2 and "'--out-dim'" in result.stderr and result.stderr.count("\n") == 1


def test_count_params_unknown_encoder_folder(tmp_path):
    result = runner.invoke(app, ["count-params", "--encoder", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "cannot load" in result.stderr


def test_count_params_never_imports_torch():
    """count-params is arithmetic (qcompress.heads.sizes): a fresh process answers it without loading torch."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from qcompress.cli import app; "
            "result = CliRunner().invoke(app, ['count-params', '--in-dim', '768', '--out-dim', '256', '--mixing', "
            "'pca', '--json']); assert result.exit_code == 0, result.output; print(result.stdout.strip()); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    table, torch_loaded = done.stdout.splitlines()
    assert json.loads(table)["rows"][0]["quantum_head"] == 6144 and torch_loaded == "False"
