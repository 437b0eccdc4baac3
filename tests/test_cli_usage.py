"""Conventions every command keeps: wrong usage exits 2 in the one-line error style, --help renders right, the
command line starts without torch, and the CLI's choices are the library's."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from qcompress.cli import app, command_paths

runner = CliRunner()

# Values Typer checks before any work (choices as Enums, ranges), for every command: each exits 2 with one line.
WRONG_USAGE = [
    (["compress", "in.jsonl", "--engine", "foo"], "--engine"),
    (["compress", "in.jsonl", "--batch-size", "0"], "--batch-size"),
    (["compress", "in.jsonl", "--max-length", "0"], "--max-length"),
    (["compress", "in.jsonl", "--num-workers", "0"], "--num-workers"),
    (["compress", "in.jsonl", "--encoder", "x", "--similarity", "dot"], "--similarity"),
    (["compress", "in.jsonl", "--encoder", "x", "--head", "mlp"], "--head"),
    (["compress", "in.jsonl", "--device", "gpu9"], "--device"),
    (["evaluate", "--top-k", "0"], "--top-k"),
    (["evaluate", "--protocol", "bm25"], "--protocol"),
    (["evaluate", "--trec", "2018"], "--trec"),
    (["evaluate", "--permutations", "0"], "--permutations"),
    (["evaluate", "--metric", "nDCG@ten"], "--metric"),
    (["score", "q.parquet", "c.parquet", "--top-k", "0"], "--top-k"),
    (["score", "--pairs", "-", "--batch-size", "-1"], "--batch-size"),
    (["count-params", "--in-dim", "0"], "--in-dim"),
    (["count-params", "--out-dim", "0"], "--out-dim"),
    (["train", "--variant", "QBXX"], "--variant"),
    (["train", "--head", "mlp"], "--head"),
    (["train", "--similarity", "dot"], "--similarity"),
    (["train", "--optimizer", "sgd"], "--optimizer"),
    (["train", "--train-fraction", "0"], "--train-fraction"),
    (["train", "--train-fraction", "1.5"], "--train-fraction"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--negatives", "-1"], "--negatives"),
    (["train", "--train-layers", "-1"], "--train-layers"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--head-lr", "-1e-3"], "--head-lr"),
    (["train", "--weight-decay", "-1"], "--weight-decay"),
    (["train", "--max-steps", "0"], "--max-steps"),
    (["train", "--device", "gpu9"], "--device"),
    (["recipe"], "RECIPE"),
    (["recipe", "recipes/variants.toml", "--device", "gpu9"], "--device"),
    (["evaluate", "--no-such-option"], "--no-such-option"),
]


@pytest.mark.parametrize("args,flag", WRONG_USAGE, ids=[" ".join(a) for a, _ in WRONG_USAGE])
def test_wrong_usage_exits_2_with_one_line_naming_the_flag(args, flag, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, not even a default output
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("qcompress: error: ") and flag in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_variant_is_case_insensitive_and_valid_values_pass_typer():
    for args in (["train", "--variant", "qbfec", "--train-fraction", "1"], ["train", "--lr", "1e-9"],
                 ["evaluate", "--metric", "AP(rel=2)", "--protocol", "full"]):
        parse(args)  # no usage error


def parse(args):
    group = typer.main.get_command(app)
    with group.make_context("qcompress", list(args)) as ctx:
        name, command, rest = group.resolve_command(ctx, [*(getattr(ctx, "_protected_args", None) or []), *ctx.args])
        command.make_context(name, rest, parent=ctx)


def test_typer_ranges_refuse_what_the_library_refuses():
    """Every range the train command checks is one TrainConfig.check_values enforces (same bound)."""
    from qcompress.cli.train import _ABOVE, _RANGES
    from qcompress.training.config import ArgumentError, TrainConfig, check_values

    for name, limits in _RANGES.items():
        if "min" in limits:
            bad = limits["min"] - 1
            if name in ("dim",):  # resolved later, against the encoder
                continue
            with pytest.raises((ArgumentError, ValueError)):
                check_values(TrainConfig(output="m", **{name: bad}))
    for name, bound in _ABOVE.items():
        with pytest.raises((ArgumentError, ValueError)):
            check_values(TrainConfig(output="m", **{name: bound}))
    with pytest.raises(ArgumentError):
        check_values(TrainConfig(output="m", train_fraction=_RANGES["train_fraction"]["max"] + 0.5))
    assert set(_RANGES) | set(_ABOVE) <= {f.name for f in dataclasses.fields(TrainConfig)}
    check_values(TrainConfig(output="m", train_fraction=1, lr=1e-9))


def test_cli_choices_are_the_librarys():
    from qcompress.cli.evaluate import DEFAULT_METRICS, ProtocolChoice, TrecYear
    from qcompress.cli.options import BackendChoice, HeadChoice, SimilarityChoice
    from qcompress.cli.train import Variant
    from qcompress.data import EVALUATION_YEARS
    from qcompress.evaluation import DEFAULT_MEASURES, PROTOCOLS
    from qcompress.heads import HEAD_KINDS
    from qcompress.similarity import SIMILARITIES
    from qcompress.training import VARIANTS

    assert [c.value for c in TrecYear] == list(EVALUATION_YEARS)
    assert [c.value for c in ProtocolChoice] == list(PROTOCOLS)
    assert DEFAULT_METRICS == list(DEFAULT_MEASURES)
    assert [c.value for c in HeadChoice] == list(HEAD_KINDS)
    assert [c.value for c in SimilarityChoice] == list(SIMILARITIES)
    assert [c.value for c in Variant] == list(VARIANTS)
    from qcompress.backends import BACKEND_EXTRAS, BACKENDS

    assert [c.value for c in BackendChoice] == list(BACKENDS)
    assert set(BACKENDS) == {"torch", "torch-bf16", *BACKEND_EXTRAS}  # every other backend names its extra


# -- --help ----------------------------------------------------------------------------------------------------------

COMMANDS = command_paths()  # every command and group, from the app itself (["index", "build"] included)


def help_text(*args):
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def help_words(*args):
    """The help as one line of words: the panels' frames and line breaks removed."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", help_text(*args)).split())


@pytest.mark.parametrize("command", [[], *COMMANDS], ids=" ".join)
def test_help_renders_right(command):
    text = help_text(*command)
    assert "<bool>" not in text  # flags take no value
    assert "[[" not in text  # optional arguments are bracketed once
    assert "--cache " not in text  # the old name of --cache-dir still works, unlisted
    assert "<list[" not in text  # several values show each one's type: <path>
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage  # required arguments read INPUT, RECIPE..., not {INPUT}


def test_usage_lines_name_arguments_as_unix_tools_do():
    usage = {" ".join(c): next(line for line in help_text(*c).splitlines() if "Usage:" in line).split()
             for c in COMMANDS}
    assert usage["compress"][-2:] == ["[OPTIONS]", "INPUT"]
    assert usage["score"][-3:] == ["[OPTIONS]", "[QUERIES]", "[CORPUS]"]
    assert usage["recipe"][-2:] == ["[OPTIONS]", "RECIPE..."]
    assert "RECIPE      <path>" in help_text("recipe")


def test_help_keeps_angle_brackets_and_states_the_defaults():
    assert "part-<first row>.parquet" in help_text("compress")
    assert "Default: INPUT's name with .parquet, beside it" in help_words("compress")
    train = help_words("train")
    assert "models/<variant or head>-<encoder name>" in train and "Default: QBEC when --head is not given" in train
    assert "<BT|QBT|BEC|QBEC|BFEC|QBFEC>" in train
    assert "OUT/<recipe>/<profile>/" in help_text("recipe")
    evaluate = help_words("evaluate")
    assert "scipy.stats.permutation_test" in evaluate and "Holm" in evaluate
    assert "Default: nDCG@10, RR@10, R@100, R@1000, AP" in evaluate
    top = help_text()
    for line in ("qcompress compress corpus.jsonl", "qcompress evaluate --trec 2019",
                 "qcompress train --encoder bert-base-uncased"):
        assert line in top


def test_shared_options_have_one_name_everywhere():
    """--cache-dir, --device, --batch-size and --max-length on every command that runs a model."""
    for command in ("compress", "evaluate", "score", "train"):
        text = help_text(command)
        for flag in ("--device", "--batch-size", "--max-length"):
            assert flag in text, (command, flag)
    assert "--device" in help_text("recipe")  # batch size and length are the recipe's own settings
    for command in ("compress", "evaluate", "train"):
        assert "--cache-dir" in help_text(command)
    for command in ("compress", "evaluate"):
        assert "--no-cache" in help_text(command) and "QCOMPRESS_CACHE" in help_text(command)


def test_cache_folder_defaults_to_the_users_cache_and_keeps_the_old_name(tmp_path, monkeypatch):
    from qcompress.cli._common import cache_folder

    monkeypatch.delenv("QCOMPRESS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder(None, None, False) == str(tmp_path / "xdg" / "qcompress")
    assert cache_folder(str(tmp_path / "a"), None, False) == str(tmp_path / "a")
    assert cache_folder(None, str(tmp_path / "old"), False) == str(tmp_path / "old")  # --cache
    assert cache_folder(str(tmp_path / "env"), str(tmp_path / "old"), False) == str(tmp_path / "old")  # typed wins
    assert cache_folder(str(tmp_path / "a"), None, True) is None  # --no-cache wins


# -- startup: no heavy imports for --help --------------------------------------------------------------------------

HEAVY = ["torch", "transformers", "scipy", "pyarrow", "numpy", "ray", "ir_datasets", "ir_measures", "pytrec_eval",
         "safetensors", "sentence_transformers", "matplotlib", "onnx", "onnxruntime", "openvino", "nncf"]

PROBE = """
import json, sys
from typer.testing import CliRunner
import qcompress.cli
from qcompress.training.config import TrainConfig
seen = {"import": sorted(m for m in HEAVY if m in sys.modules)}
for args in ([], *COMMANDS):
    CliRunner().invoke(qcompress.cli.app, [*args, "--help"])
seen["help"] = sorted(m for m in HEAVY if m in sys.modules)
print(json.dumps(seen))
"""


def test_the_command_line_and_its_help_import_no_torch():
    """`import qcompress.cli` (and TrainConfig, from which `train`'s options come) and every --help, in a fresh
    interpreter: none of the heavy libraries is imported."""
    code = f"HEAVY = {HEAVY!r}\nCOMMANDS = {COMMANDS!r}\n" + PROBE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seen = json.loads(out.splitlines()[-1])
    assert seen == {"import": [], "help": []}, seen


def test_every_public_name_of_the_lazy_packages_still_imports():
    import importlib

    for package in ("qcompress", "qcompress.training", "qcompress.evaluation", "qcompress.formats", "qcompress.data",
                    "qcompress.recipes"):
        module = importlib.import_module(package)
        for name in module.__all__:
            assert getattr(module, name) is not None, (package, name)
            assert name in dir(module)
    import qcompress

    assert qcompress.search.topk is not None  # a submodule, as after an eager `import qcompress`
    with pytest.raises(AttributeError):
        qcompress.no_such_name


def test_an_output_that_cannot_be_written_fails_before_any_model_loads(tmp_path):
    """Checked before the model (here a folder that does not exist) is looked at: one line naming the flag."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    (tmp_path / "in.jsonl").write_text('{"_id": "a", "text": "wing"}\n')
    nowhere = str(tmp_path / "no-model")
    cases = [
        ["compress", str(tmp_path / "in.jsonl"), "-o", str(blocker / "out.parquet"), "--model", nowhere],
        ["evaluate", "--run-out", str(blocker / "run.trec"), "--model", nowhere],
        ["score", "q.parquet", "c.parquet", "-o", str(blocker / "deeper" / "run.trec")],
    ]
    for args in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
        assert f"{blocker} is a file, not a folder" in result.stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_a_folder_without_write_permission_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    (tmp_path / "in.jsonl").write_text('{"_id": "a", "text": "wing"}\n')
    result = runner.invoke(app, ["compress", str(tmp_path / "in.jsonl"), "-o", str(locked / "o.parquet"),
                                 "--model", str(tmp_path / "no-model")])
    assert result.exit_code == 1 and f"cannot write in {locked} (permission denied)" in result.stderr
