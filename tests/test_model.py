"""Model folders as a careful user and a hostile one would try them (issue 14: items 6, 9, 10, 12, 13, 15): every
field of qcompress.json checked, safetensors only, an encoder never taken from outside the folder, one clear line
instead of a traceback; pooling modes; the real 768-d all-mpnet-base-v2 where it is available.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from qcompress.cli import app
from qcompress.errors import InputError
from qcompress.model import build_model, load_model

runner = CliRunner()
LONG = "the boundary layer flow on a wing " * 40  # ~280 tokens: past the tiny BERT's 128 positions


@pytest.fixture(scope="module")
def quantum_folder(tiny_encoder, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "qmodel"
    build_model(tiny_encoder, head="quantum", dim=16, max_length=64).save(folder)
    return folder


@pytest.fixture
def docs(tmp_path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"_id": "d1", "text": "a wing"}) + "\n" + json.dumps({"_id": "d2", "text": LONG}) + "\n")
    return path


def copy_with(folder: Path, dest: Path, **changes) -> Path:
    """A copy of a model folder with fields of its qcompress.json changed."""
    shutil.copytree(folder, dest)
    config = json.loads((dest / "qcompress.json").read_text())
    config.update(changes)
    (dest / "qcompress.json").write_text(json.dumps(config))
    return dest


def one_line_error(result, *needles: str) -> str:
    """The run exited 1 with exactly one `qcompress: error:` line (no traceback) holding every needle."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qcompress: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def compress(docs: Path, *args: str):
    return runner.invoke(app, ["compress", str(docs), "-o", str(docs.parent / "out.parquet"), "--force", *args])


# -- item 6 and 13: every field of qcompress.json is checked on load, and named --------------------------------------


@pytest.mark.parametrize("changes, field", [
    ({"similarity": "dot"}, "similarity"),
    ({"similarity": "cosine"}, "similarity"),  # a quantum head compared by cosine
    ({"dim": "abc"}, "dim"),
    ({"dim": -1}, "dim"),
    ({"dim": 64}, "dim"),  # larger than in_dim: a head compresses
    ({"head": "qubits"}, "head"),
    ({"in_dim": 24}, "in_dim"),  # not the encoder's hidden size
    ({"max_length": 0}, "max_length"),
    ({"max_length": 512}, "max_length"),  # beyond the encoder's 128 positions
    ({"pooling": "weighted"}, "pooling"),
    ({"normalize": "yes"}, "normalize"),
    ({"query_prompt": 7}, "query_prompt"),
    ({"base_model": ""}, "base_model"),
    ({"training": [1]}, "training"),
    ({"colour": "blue"}, "colour"),
])
def test_every_field_of_qcompress_json_is_checked_on_load(quantum_folder, tmp_path, docs, changes, field):
    folder = copy_with(quantum_folder, tmp_path / "m", **changes)
    with pytest.raises(InputError) as err:
        load_model(folder)
    assert err.value.field == field and err.value.file == folder / "qcompress.json"
    one_line_error(compress(docs, "--model", str(folder)), f'{folder / "qcompress.json"}: field "{field}"')
    assert not (tmp_path / "out.parquet").exists()


def test_head_none_with_a_dim_that_is_not_the_encoders_is_named(tiny_encoder, tmp_path, docs):
    build_model(tiny_encoder, similarity="fidelity", max_length=64).save(tmp_path / "qbt")
    folder = copy_with(tmp_path / "qbt", tmp_path / "m", dim=16)
    one_line_error(compress(docs, "--model", str(folder)), 'qcompress.json: field "dim"', "without a head")


# -- item 9 and 12: safetensors only; bad weights are one line ------------------------------------------------------


def pickled_encoder(tiny_encoder: str, dest: Path, payload: bytes | None = None) -> Path:
    """The tiny BERT with its weights as pytorch_model.bin (a pickle; or `payload` bytes) instead of safetensors."""
    from safetensors.torch import load_file

    shutil.copytree(tiny_encoder, dest)
    weights = dest / "model.safetensors"
    if payload is None:
        torch.save(load_file(str(weights)), dest / "pytorch_model.bin")
    else:
        (dest / "pytorch_model.bin").write_bytes(payload)
    weights.unlink()
    return dest


def test_an_encoder_with_only_pickled_weights_is_refused_in_one_line(tiny_encoder, tmp_path, docs):
    encoder = pickled_encoder(tiny_encoder, tmp_path / "pickled")
    one_line_error(compress(docs, "--encoder", str(encoder), "--head", "none"),
                   str(encoder), "pytorch_model.bin", "safetensors only")
    assert not (tmp_path / "out.parquet").exists()


def test_a_pickle_that_fails_to_unpickle_is_never_opened(tiny_encoder, quantum_folder, tmp_path, docs):
    encoder = pickled_encoder(tiny_encoder, tmp_path / "garbage", payload=b"\x80\x04not a pickle at all")
    one_line_error(compress(docs, "--encoder", str(encoder), "--head", "none"), "pytorch_model.bin", "safetensors only")
    folder = Path(shutil.copytree(quantum_folder, tmp_path / "m"))  # the same inside a model folder
    shutil.rmtree(folder / "encoder")
    shutil.copytree(encoder, folder / "encoder")
    one_line_error(compress(docs, "--model", str(folder)), "pytorch_model.bin", "safetensors only")


def test_a_garbage_head_file_is_one_line_naming_it(quantum_folder, tmp_path, docs):
    folder = Path(shutil.copytree(quantum_folder, tmp_path / "m"))
    (folder / "head.safetensors").write_bytes(b"\x00\x01garbage, not safetensors")
    one_line_error(compress(docs, "--model", str(folder)), str(folder / "head.safetensors"), "safetensors")
    (folder / "head.safetensors").unlink()
    one_line_error(compress(docs, "--model", str(folder)), "missing head.safetensors")


def test_head_weights_that_do_not_fit_the_config_are_one_line(tiny_encoder, quantum_folder, tmp_path, docs):
    build_model(tiny_encoder, head="quantum", dim=8, max_length=64).save(tmp_path / "other")
    folder = Path(shutil.copytree(quantum_folder, tmp_path / "m"))
    shutil.copy(tmp_path / "other" / "head.safetensors", folder / "head.safetensors")
    one_line_error(compress(docs, "--model", str(folder)), "head.safetensors", "do not fit the quantum head")


def test_max_length_beyond_the_encoders_positions_is_one_line(tiny_encoder, quantum_folder, docs):
    one_line_error(compress(docs, "--encoder", tiny_encoder, "--head", "none", "--max-length", "200"),
                   'field "max_length"', "200 tokens is more than the 128 positions")
    one_line_error(compress(docs, "--model", str(quantum_folder), "--max-length", "200"),
                   'field "max_length"', "128 positions")
    result = compress(docs, "--encoder", tiny_encoder, "--head", "none", "--max-length", "128")
    assert result.exit_code == 0, result.output  # the limit itself is fine, and long texts are truncated to it


def test_the_default_max_length_fits_a_short_encoder(tiny_encoder):
    assert build_model(tiny_encoder).max_length == 128  # 256 by default, but this encoder has 128 positions


# -- item 10: a model folder's encoder is a Hub id or inside the folder ---------------------------------------------


def test_an_encoder_outside_the_model_folder_is_refused_unless_named_on_the_command_line(
        quantum_folder, tiny_encoder, tmp_path, docs):
    outside = copy_with(quantum_folder, tmp_path / "abs", encoder=tiny_encoder)
    shutil.rmtree(outside / "encoder", ignore_errors=True)
    with pytest.raises(InputError) as err:
        load_model(outside)
    assert err.value.field == "encoder" and "may not point elsewhere" in str(err.value)
    one_line_error(compress(docs, "--model", str(outside)), 'qcompress.json: field "encoder"', "--encoder PATH")
    result = compress(docs, "--model", str(outside), "--encoder", tiny_encoder)  # the user vouches for it
    assert result.exit_code == 0, result.output

    escaping = copy_with(quantum_folder, tmp_path / "dots", encoder="../../etc")
    one_line_error(compress(docs, "--model", str(escaping)), 'field "encoder"', "'../../etc'")

    # A Hub id is a Hub id: not a folder of the current directory that happens to have its name.
    hub_named = copy_with(quantum_folder, tmp_path / "hub", encoder="tiny-bert")
    shutil.rmtree(hub_named / "encoder")
    shutil.copytree(tiny_encoder, tmp_path / "tiny-bert")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        with pytest.raises(InputError, match="tiny-bert: no such folder, and the Hub model is not in the Hugging"):
            load_model(hub_named)

    inside = copy_with(quantum_folder, tmp_path / "inside", encoder="weights/bert")
    (inside / "weights").mkdir()
    (inside / "encoder").rename(inside / "weights" / "bert")
    torch.testing.assert_close(load_model(inside).encode(["a wing"], convert_to_tensor=True),
                               load_model(quantum_folder).encode(["a wing"], convert_to_tensor=True))


# -- item 13: a broken tokenizer names the folder ---------------------------------------------------------------------


def test_an_encoder_with_a_broken_or_missing_tokenizer_is_named(tiny_encoder, tmp_path, docs):
    broken = Path(shutil.copytree(tiny_encoder, tmp_path / "broken"))
    (broken / "tokenizer.json").write_text("{ not json")
    one_line_error(compress(docs, "--encoder", str(broken), "--head", "none"), str(broken), "tokenizer")
    for name in ("tokenizer.json", "vocab.txt"):
        (broken / name).unlink()
    # transformers would build a tokenizer of five special tokens: every word [UNK], and no error
    one_line_error(compress(docs, "--encoder", str(broken), "--head", "none"), str(broken), "holds no tokenizer")


# -- item 15: one model, however its encoder is spelled ---------------------------------------------------------------


@pytest.mark.integration
def test_minilm_and_its_full_name_are_one_model_for_score(minilm_path, tmp_path):
    queries, corpus = tmp_path / "q.jsonl", tmp_path / "c.jsonl"
    queries.write_text(json.dumps({"_id": "q1", "text": "what is lift"}) + "\n")
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                              for i, t in enumerate(["lift on a wing", "heat transfer", "boundary layers"])))
    for path, name in ((queries, "minilm"), (corpus, "sentence-transformers/all-MiniLM-L6-v2")):
        result = runner.invoke(app, ["compress", str(path), "--encoder", name, "--head", "none", "--similarity",
                                     "fidelity", "-o", str(path.with_suffix(".parquet"))])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["score", str(queries.with_suffix(".parquet")), str(corpus.with_suffix(".parquet")),
                                 "--top-k", "3"])
    assert result.exit_code == 0, result.output
    assert [line.split()[2] for line in result.stdout.splitlines()][0] == "d0"


# -- pooling --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["mean", "cls", "max", "lasttoken"])
@pytest.mark.parametrize("left", [False, True])
def test_pooling_matches_sentence_transformers(mode, left):
    from sentence_transformers.models import Pooling

    from qcompress.pooling import pool_hidden

    torch.manual_seed(1)
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    if left:
        mask = mask.flip(1)
    expected = Pooling(4, pooling_mode=mode)({"token_embeddings": hidden, "attention_mask": mask})
    torch.testing.assert_close(pool_hidden(hidden, mask, mode), expected["sentence_embedding"])


# -- a real 768-d encoder offline --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mpnet_path() -> Path:
    from qcompress.encoder import offline_mpnet_path

    path = offline_mpnet_path()
    if path is None:
        pytest.skip("all-mpnet-base-v2 is not assembled: bash ../shared/data/get-mpnet.sh DIR, then "
                    "QCOMPRESS_MPNET=DIR (or DIR = ~/.cache/qcompress/all-mpnet-base-v2)")
    return path


@pytest.mark.integration
def test_mpnet_is_used_as_its_sentence_transformers_configuration_says(mpnet_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    texts = ["what is the lift of a wing?", "Heat transfer in a laminar boundary layer."]
    model = build_model("mpnet", similarity="cosine", device="cpu")
    c = model.config
    assert (c.in_dim, c.pooling, c.normalize, c.base_model) == (768, "mean", True,
                                                                 "sentence-transformers/all-mpnet-base-v2")
    expected = SentenceTransformer(str(mpnet_path), device="cpu").encode(texts, convert_to_tensor=True)
    # the pooled vectors, as ST normalises them
    got = torch.nn.functional.normalize(model.encode(texts, convert_to_tensor=True), dim=-1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    head = build_model(str(mpnet_path), head="quantum", dim=256, device="cpu")
    assert head.head_parameters() == 6144  # the paper's 768 -> 256 head


@pytest.mark.integration
def test_a_recipe_runs_on_mpnet_by_name(mpnet_path, tmp_path, monkeypatch):
    """`--set encoder=mpnet`: the paper's 768-d heads (768 -> 256) in a recipe, on a tiny stand-in collection."""
    from qcompress import recipes
    from qcompress.recipes import runner as recipe_runner

    # Runs from uncommitted code are not aggregated: the test must not depend on the working tree's state.
    monkeypatch.setattr(recipe_runner, "git_state", lambda: ("0000000", False))
    from test_training import write_beir

    folder = write_beir(tmp_path / "beir")
    evaluate = f'[{{name = "tiny test", dataset = "{folder}", split = "test", protocol = "full", top_k = 100}}]'
    overrides = ["encoder=mpnet", f"train.dataset={folder}", "train.epochs=1", "train.batch_size=4",
                 "train.negatives=2", "max_length=32", "seeds=[42]", f"evaluate={evaluate}"]
    argv = [str(Path(__file__).resolve().parents[1] / "recipes" / "variants.toml"), "--profile", "offline",
            "--out", str(tmp_path / "out"), "--only", "QBFEC", *[x for o in overrides for x in ("--set", o)]]
    assert recipes.main(argv) == 0
    results = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("results/*.json")]
    qbfec = [r for r in results if r["label"] == "QBFEC"]
    assert qbfec and qbfec[0]["encoder"] == "mpnet"
    assert qbfec[0]["rows"][0]["dim"] == 256 and qbfec[0]["rows"][0]["head_parameters"] == 6144


def test_every_file_of_a_model_folder_follows_the_umask(tiny_encoder, tmp_path):
    """Issue 14 item 16 (fails before: safetensors writes its files 0600, so head.safetensors and the encoder's
    weights were unreadable to the group while qcompress.json was readable)."""
    import os

    from qcompress.atomic import atomic_dir

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "m") as tmp:
            build_model(tiny_encoder, head="quantum", dim=8, device="cpu").save(tmp)
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path / "m").as_posix(): p.stat().st_mode & 0o777
             for p in (tmp_path / "m").rglob("*")}
    assert modes["head.safetensors"] == 0o644 and modes["encoder/model.safetensors"] == 0o644
    assert set(modes.values()) == {0o644, 0o755}


def test_encode_returns_numpy_by_default_and_torch_when_asked(tiny_encoder):
    """As sentence-transformers' encode: numpy by default, `convert_to_tensor=True` a torch tensor; one str, one row."""
    import numpy as np

    model = build_model(tiny_encoder, head="quantum", dim=8, max_length=64, device="cpu")
    texts = ["a wing", "heat flow"]
    angles = model.encode(texts)
    assert isinstance(angles, np.ndarray) and angles.dtype == np.float32 and angles.shape == (2, 8)
    tensor = model.encode(texts, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu" and np.array_equal(tensor.numpy(), angles)
    assert np.array_equal(model.encode("a wing"), angles[0]) and model.encode("a wing").shape == (8,)
    assert torch.equal(model.encode("heat flow", role="query", convert_to_tensor=True),
                       model.encode(["heat flow"], role="query", convert_to_tensor=True)[0])
