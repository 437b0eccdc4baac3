"""Label-free distillation (`loss="distill"`, issue 18) on tiny data: the loss falls, the student's top-10 moves
towards the teacher's, runs resume exactly, and the CLI takes a plain file of texts."""

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from qcompress import load_model
from qcompress.cli import app
from qcompress.quantum import pairwise_log_fidelity
from qcompress.training import train
from qcompress.training.distill import column_indices, pseudo_queries, read_corpus

from conftest import DISTILL_WORDS, distill_settings, interrupted_and_resumed

WORDS = DISTILL_WORDS
_settings = distill_settings


def _top10_overlap(folder, texts) -> float:
    """Mean share of each text's 10 nearest texts (itself left out) that the model and its teacher agree on."""
    model = load_model(folder, device="cpu").eval()
    student = model.encode(texts, convert_to_tensor=True)
    with torch.no_grad():
        teacher = F.normalize(model.pool(texts), dim=-1)  # the frozen encoder without its head: the teacher
    eye = torch.eye(len(texts), dtype=torch.bool)
    s = pairwise_log_fidelity(student, student).masked_fill(eye, float("-inf")).topk(10).indices
    t = (teacher @ teacher.T).masked_fill(eye, float("-inf")).topk(10).indices
    return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(s, t)) / (10 * len(texts))


@pytest.mark.parametrize("mixing", ["none", "pca"])
def test_distillation_lowers_its_loss_and_moves_the_top10_towards_the_teacher(tiny_encoder, corpus_file, tmp_path,
                                                                               mixing):
    texts = [t for _, t in read_corpus(str(corpus_file))]
    untrained = train(_settings(tiny_encoder, corpus_file, tmp_path, mixing=mixing, head_lr=1e-12, max_steps=1,
                                output=str(tmp_path / "untrained")))
    trained = train(_settings(tiny_encoder, corpus_file, tmp_path, mixing=mixing))
    log = [json.loads(x) for x in (trained / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["kind"] == "step"]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    before, after = _top10_overlap(untrained, texts), _top10_overlap(trained, texts)
    assert after > before + 0.05, (before, after)
    config = json.loads((trained / "qcompress.json").read_text())
    assert config["mixing"] == mixing and config["training"]["loss"] == "distill"
    assert config["training_result"]["distill_scale"] > 0


def test_distillation_resumes_to_the_same_weights(tiny_encoder, corpus_file, tmp_path):
    full = train(_settings(tiny_encoder, corpus_file, tmp_path, epochs=2, output=str(tmp_path / "full")))
    out = interrupted_and_resumed(_settings(tiny_encoder, corpus_file, tmp_path, epochs=2,
                                            output=str(tmp_path / "cut")), steps=3)
    a, b = load_model(full, device="cpu"), load_model(out, device="cpu")
    assert torch.equal(a.head.raw, b.head.raw)
    assert torch.equal(a.mixing.rotation, b.mixing.rotation)  # distill's default mixing: pca


def test_distillation_with_trained_layers(tiny_encoder, corpus_file, tmp_path):
    folder = train(_settings(tiny_encoder, corpus_file, tmp_path, train_layers=1, epochs=1, lr=1e-3,
                             pseudo_queries="spans"))
    config = json.loads((folder / "qcompress.json").read_text())
    assert config["encoder_trained"] is True and config["training_result"]["frozen_prefix"] is True
    assert load_model(folder, device="cpu").encode(["wing lift"], convert_to_tensor=True).shape == (1, 8)


def test_pseudo_queries_and_columns_are_seeded():
    texts = [" ".join(WORDS)] * 3
    spans = pseudo_queries(texts, "spans", 1)
    assert spans == pseudo_queries(texts, "spans", 1) and all(4 <= len(s.split()) <= 16 for s in spans)
    assert pseudo_queries(texts, "documents", 1) == texts
    rows = torch.tensor([3, 5])
    cols = column_indices(rows, 50, 10, seed=1, step=4)
    assert cols[:2].tolist() == [3, 5] and len(set(cols.tolist())) == 12
    assert torch.equal(cols, column_indices(rows, 50, 10, seed=1, step=4))
    assert not torch.equal(cols, column_indices(rows, 50, 10, seed=1, step=5))


def test_cli_train_distill_on_a_tsv_of_texts(tiny_encoder, tmp_path):
    tsv = tmp_path / "texts.tsv"
    tsv.write_text("".join(f"t{i}\t{' '.join(WORDS[i % 7: i % 7 + 5])}\n" for i in range(20)))
    result = CliRunner().invoke(app, ["train", "--loss", "distill", "--encoder", tiny_encoder, "--head", "quantum",
                                      "--dim", "8", "--dataset", str(tsv), "--max-steps", "2", "--batch-size", "8",
                                      "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["steps"] == 2
    bad = CliRunner().invoke(app, ["train", "--loss", "distil", "--encoder", tiny_encoder, "-o", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "loss" in bad.output


def test_cli_train_distill_without_a_head_trains_the_quantum_head_on_the_frozen_encoder(tiny_encoder, tmp_path):
    """Issue 26's command names no --head: label-free training is the head's, not QBEC's four encoder layers (a
    listwise loss over 128 x 512 documents through four trained layers took 22 GB on Cranfield)."""
    tsv = tmp_path / "texts.tsv"
    tsv.write_text("".join(f"t{i}\t{' '.join(WORDS[i % 7: i % 7 + 5])}\n" for i in range(20)))
    result = CliRunner().invoke(app, ["train", "--loss", "distill", "--encoder", tiny_encoder, "--dim", "8",
                                      "--dataset", str(tsv), "--max-steps", "1", "--batch-size", "8", "--cache-dir",
                                      str(tmp_path / "c"), "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "m" / "qcompress.json").read_text())
    assert (config["head"], config["training"]["train_layers"], config["training"]["variant"]) == ("quantum", 0, None)


def test_no_store_encoder_writes_a_head_only_folder(minilm_path, tiny_encoder, tmp_path):
    tsv = tmp_path / "texts.tsv"
    tsv.write_text("".join(f"t{i}\t{' '.join(WORDS[i % 9: i % 9 + 6])}\n" for i in range(24)))
    args = ["train", "--loss", "distill", "--head", "quantum", "--dim", "128", "--mixing", "hadamard", "--dataset",
            str(tsv), "--max-steps", "2", "--batch-size", "8", "--max-length", "32", "--no-store-encoder",
            "--cache-dir", str(tmp_path / "c")]
    result = CliRunner().invoke(app, args + ["--encoder", "minilm", "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"qcompress.json", "head.safetensors",
                                                             "mixing.safetensors"}
    assert not (tmp_path / "m" / "encoder").exists()
    assert (tmp_path / "m" / "head.safetensors").stat().st_size < 16 * 1024
    assert load_model(tmp_path / "m", device="cpu").encode(["wing lift"], convert_to_tensor=True).shape == (1, 128)
    args[args.index("128")] = "8"
    local = CliRunner().invoke(app, args + ["--encoder", tiny_encoder, "-o", str(tmp_path / "x")])
    assert local.exit_code != 0 and "--store-encoder off" in local.output and "Hub id" in local.output
