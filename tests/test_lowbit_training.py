"""Training for low-bit angle codes (`train --bits`, issue 26) and models that carry a codec: the
quantization-aware loss falls, gradients pass the quantizer, the levels are saved and reloaded bit for bit, a run
resumes to the same levels, the folder says what it stores (qcompress.json, model card, count-params), and bad
codec settings are one line."""

import json

import pytest
import torch
from typer.testing import CliRunner

from qcompress import load_model
from qcompress.cli import app
from qcompress.codes import CODES_FILE, AngleCodes
from qcompress.data import Collection
from qcompress.errors import InputError
from qcompress.model import build_model
from qcompress.model_config import ModelConfig
from qcompress.quantum import pairwise_log_fidelity_trainable
from qcompress.training import train
from qcompress.training.quantizer import DocumentQuantizer

from conftest import DISTILL_WORDS, distill_settings, interrupted_and_resumed

runner = CliRunner()
WORDS = DISTILL_WORDS


def _settings(tiny_encoder, corpus_file, tmp_path, **kw):
    return distill_settings(tiny_encoder, corpus_file, tmp_path, **dict(dict(bits=2), **kw))


def _losses(folder) -> list[float]:
    rows = [json.loads(x) for x in (folder / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "step"]


# -- the quantizer ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quantizer", ["ste", "noise", "soft"])
def test_the_quantization_aware_loss_falls_and_the_folder_keeps_the_codec(tiny_encoder, corpus_file, tmp_path,
                                                                         quantizer):
    folder = train(_settings(tiny_encoder, corpus_file, tmp_path, quantizer=quantizer))
    losses = _losses(folder)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    config = json.loads((folder / "qcompress.json").read_text())
    assert config["bits"] == 2 and config["training"]["quantizer"] == quantizer
    model = load_model(folder, device="cpu")
    assert model.codec == AngleCodes.load(folder / CODES_FILE) and model.codec.bits == 2 and model.codec.dim == 8
    # The levels are Lloyd-Max levels of the training documents' final angles (the last refit).
    angles = model.encode([json.loads(line)["text"] for line in corpus_file.read_text().splitlines()],
                          role="document")
    assert torch.allclose(model.codec.levels, AngleCodes.fit(angles, 2).levels, atol=1e-4)


def _distinct_per_qubit(x: torch.Tensor) -> int:
    return max(len(set(column.tolist())) for column in x.detach().T)


def test_training_scores_float_queries_against_coded_documents(tiny_encoder, corpus_file, tmp_path, monkeypatch):
    import qcompress.training.distill as distill
    import qcompress.training.step as step

    seen = []
    similarities = distill._similarities
    monkeypatch.setattr(distill, "_similarities", lambda model, a, b: seen.append((a, b)) or similarities(model, a, b))
    train(_settings(tiny_encoder, corpus_file, tmp_path, bits=1, max_steps=2))
    queries, documents = seen[-1]
    assert _distinct_per_qubit(documents) <= 2 < _distinct_per_qubit(queries)

    logits = step._logits
    monkeypatch.setattr(step, "_logits", lambda model, cfg, eq, ed, mask: seen.append((eq, ed)) or
                        logits(model, cfg, eq, ed, mask))
    tiny = Collection("tiny", corpus={f"d{i}": f"{WORDS[i]} {WORDS[i + 1]} flow" for i in range(8)},
                      queries={"q1": "what is lift", "q2": "heat"}, qrels={"q1": {"d1": 1}, "q2": {"d2": 1}},
                      split="train")
    for bits in (1, None):  # without --bits (the control) the documents' angles are float32
        train({"encoder": tiny_encoder, "head": "quantum", "dim": 8, "bits": bits, "negatives": 4, "max_steps": 1,
               "output": str(tmp_path / "contrastive"), "cache_dir": str(tmp_path / "cache"), "overwrite": True},
              collection=tiny)
        distinct = _distinct_per_qubit(seen[-1][1].reshape(-1, 8))
        assert distinct <= 2 if bits else distinct > 2


def _head_and_documents(tiny_encoder):
    torch.manual_seed(0)
    model = build_model(tiny_encoder, head="quantum", dim=8, device="cpu")
    pooled = torch.randn(24, 32)
    return model, pooled


def test_the_straight_through_gradient_reaches_the_head_as_the_identity_through_rounding(tiny_encoder):
    model, pooled = _head_and_documents(tiny_encoder)
    quantizer = DocumentQuantizer(8, 2, "ste")
    with torch.no_grad():
        quantizer.fit(model.project(pooled))
    queries = model.project(pooled[:6]).detach()

    documents = model.project(pooled)
    coded = quantizer(documents)
    codec = quantizer.codec()
    assert torch.equal(coded.detach(), codec.decode(codec.encode(documents.detach())))  # the forward pass codes
    pairwise_log_fidelity_trainable(queries, coded).sum().backward()
    grad = model.head.raw.grad.clone()
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0

    # The same gradient by hand: d loss / d coded, passed unchanged to the float angles, then into the head.
    model.head.raw.grad = None
    at_codes = coded.detach().requires_grad_()
    pairwise_log_fidelity_trainable(queries, at_codes).sum().backward()
    documents = model.project(pooled)
    documents.backward(at_codes.grad)
    assert torch.allclose(grad, model.head.raw.grad)


def test_noise_and_soft_relaxations_pass_gradients_and_end_where_rounding_does(tiny_encoder):
    model, pooled = _head_and_documents(tiny_encoder)
    angles = model.project(pooled)
    for method in ("noise", "soft"):
        quantizer = DocumentQuantizer(8, 3, method)
        quantizer.fit(angles)
        model.head.raw.grad = None
        out = quantizer(angles)
        out.square().sum().backward(retain_graph=True)
        assert model.head.raw.grad.abs().sum() > 0
        codec = quantizer.codec()
        hard = codec.decode(codec.encode(angles.detach()))
        levels = codec.levels
        gaps = (levels[:, 1:] - levels[:, :-1]).amax(1)
        if method == "noise":  # within the widest cell of the qubit around the float angle
            assert ((out.detach() - angles.detach()).abs() <= gaps[None] + 1e-6).all()
            assert not torch.equal(out.detach(), angles.detach())
        else:
            quantizer.progress = 1.0  # annealed: nearly hard rounding
            assert (quantizer(angles).detach() - hard).abs().median() < 1e-3
        quantizer.eval()
        assert torch.equal(quantizer(angles).detach(), hard)  # eval: every method rounds


def test_a_resumed_run_ends_with_the_same_head_and_levels(tiny_encoder, corpus_file, tmp_path):
    full = train(_settings(tiny_encoder, corpus_file, tmp_path, epochs=2, output=str(tmp_path / "full")))
    # Stopped in the second epoch (5 steps each): its levels, fitted at the epoch's start, come from the checkpoint.
    out = interrupted_and_resumed(_settings(tiny_encoder, corpus_file, tmp_path, epochs=2,
                                            output=str(tmp_path / "cut")), steps=7)
    a, b = load_model(full, device="cpu"), load_model(out, device="cpu")
    assert torch.equal(a.head.raw, b.head.raw) and torch.equal(a.codec.levels, b.codec.levels)


def test_learned_levels_and_a_warm_up_train_and_keep_a_valid_codec(tiny_encoder, corpus_file, tmp_path):
    learned = train(_settings(tiny_encoder, corpus_file, tmp_path, code_levels="learned", epochs=3,
                              output=str(tmp_path / "learned")))
    warm = train(_settings(tiny_encoder, corpus_file, tmp_path, code_warmup=2, epochs=3,
                           output=str(tmp_path / "warm")))
    for folder in (learned, warm):
        codec = load_model(folder, device="cpu").codec
        assert codec.bits == 2 and (codec.levels[:, 1:] >= codec.levels[:, :-1]).all()


def test_bits_with_trained_layers_and_with_the_contrastive_loss(tiny_encoder, corpus_file, tmp_path):
    folder = train(_settings(tiny_encoder, corpus_file, tmp_path, train_layers=1, epochs=1, lr=1e-3))
    assert load_model(folder, device="cpu").codec.bits == 2
    tiny = Collection("tiny", corpus={"d1": "lift on a wing", "d2": "heat in the layer", "d3": "the flow",
                                      "d4": "a layer", "d5": "shock wave"},
                      queries={"q1": "what is lift", "q2": "heat"}, qrels={"q1": {"d1": 1}, "q2": {"d2": 1}},
                      split="train")
    folder = train({"encoder": tiny_encoder, "head": "quantum", "dim": 8, "bits": 1, "negatives": 2, "epochs": 2,
                    "output": str(tmp_path / "contrastive"), "cache_dir": str(tmp_path / "cache")}, collection=tiny)
    assert load_model(folder, device="cpu").codec.bits == 1


# -- model folders with a codec ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coded_folder(tiny_encoder, tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(tiny_encoder, head="quantum", dim=12, max_length=64, device="cpu")
    model.set_codec(AngleCodes.fit(torch.rand(50, 12) * 3, bits=3))
    folder = tmp_path_factory.mktemp("coded") / "m"
    model.save(folder)
    return folder, model.codec


def test_levels_are_saved_and_reloaded_bit_for_bit(coded_folder):
    folder, codec = coded_folder
    loaded = load_model(folder, device="cpu")
    assert loaded.codec is not None and torch.equal(loaded.codec.levels, codec.levels)
    assert loaded.codec.bits == 3 and loaded.config.bits == 3
    assert json.loads((folder / "qcompress.json").read_text())["bits"] == 3
    card = (folder / "README.md").read_text()
    assert "5 bytes per vector (3 bits per qubit)" in card and "codes.safetensors" in card


def test_a_coded_model_writes_documents_as_codes_and_queries_as_float32_angles(coded_folder, tmp_path):
    """Issue 26's pipeline: compress (documents) + compress --role query + score must rank as `evaluate --bits`
    does, float32 query angles against coded documents; queries coded by default scored otherwise."""
    from qcompress.formats import read_embedding_metadata

    folder, _ = coded_folder
    texts = tmp_path / "t.tsv"
    texts.write_text("".join(f"d{i}\t{' '.join(DISTILL_WORDS[i % 5: i % 5 + 4])}\n" for i in range(12)))
    for role, encoding in (("document", "codes"), ("query", "float32")):
        out = tmp_path / f"{role}.parquet"
        result = CliRunner().invoke(app, ["compress", str(texts), "--model", str(folder), "--role", role, "-o",
                                          str(out), "--no-cache"])
        assert result.exit_code == 0, result.output
        assert read_embedding_metadata(out)["encoding"] == encoding
    coded = tmp_path / "q-coded.parquet"
    result = CliRunner().invoke(app, ["compress", str(texts), "--model", str(folder), "--role", "query", "--bits", "3",
                                      "-o", str(coded), "--no-cache"])
    assert result.exit_code == 0 and read_embedding_metadata(coded)["encoding"] == "codes"  # when asked for


def test_a_folder_without_bits_loads_with_no_codec(tiny_encoder, tmp_path):
    folder = tmp_path / "plain"
    build_model(tiny_encoder, head="quantum", dim=8, device="cpu").save(folder)
    model = load_model(folder, device="cpu")
    assert model.codec is None and model.config.bits is None and not (folder / CODES_FILE).exists()
    assert "bits" not in json.loads((folder / "qcompress.json").read_text()) or \
        json.loads((folder / "qcompress.json").read_text())["bits"] is None
    assert "32 bytes per vector (float32)" in (folder / "README.md").read_text()


def test_the_bundled_default_model_loads_without_a_codec():
    from qcompress.model import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "qcompress.json").is_file():
        pytest.skip("no bundled default model")
    assert ModelConfig.from_dict(json.loads((DEFAULT_MODEL_DIR / "qcompress.json").read_text())).bits is None


def _with(folder, dest, **changes):
    import shutil

    shutil.copytree(folder, dest)
    config = json.loads((dest / "qcompress.json").read_text())
    config.update(changes)
    (dest / "qcompress.json").write_text(json.dumps(config))
    return dest


@pytest.mark.parametrize("changes, needle", [
    ({"bits": 9}, "from 1 to 8"),
    ({"bits": 0}, "from 1 to 8"),
    ({"bits": "4"}, "from 1 to 8"),
    ({"bits": 2}, "12 qubits at 3 bits"),  # the codec does not fit qcompress.json
    ({"bits": None}, "has no bits"),
])
def test_bad_bits_or_a_codec_that_does_not_fit_is_one_line(coded_folder, tmp_path, changes, needle):
    folder = _with(coded_folder[0], tmp_path / "m", **changes)
    with pytest.raises(InputError) as err:
        load_model(folder, device="cpu")
    assert needle in str(err.value) and "\n" not in str(err.value)
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"_id": "d1", "text": "a wing"}) + "\n")
    result = runner.invoke(app, ["compress", str(docs), "--model", str(folder), "-o", str(tmp_path / "o.parquet")])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1 and needle in result.stderr
    assert not (tmp_path / "o.parquet").exists()


def test_a_missing_or_garbage_codec_file_is_named(coded_folder, tmp_path):
    missing = _with(coded_folder[0], tmp_path / "missing")
    (missing / CODES_FILE).unlink()
    with pytest.raises(InputError, match="missing codes.safetensors"):
        load_model(missing, device="cpu")
    garbage = _with(coded_folder[0], tmp_path / "garbage")
    (garbage / CODES_FILE).write_bytes(b"not safetensors")
    with pytest.raises(InputError) as err:
        load_model(garbage, device="cpu")
    assert err.value.file == garbage / CODES_FILE


def test_model_config_refuses_bits_for_a_cosine_model_and_outside_1_to_8():
    base = ModelConfig.create(encoder="minilm", head="quantum", in_dim=384, dim=128)
    with pytest.raises(ValueError, match="^bits: codes store qubit angles; a cosine model outputs vectors"):
        ModelConfig.create(encoder="minilm", head="linear", in_dim=384, dim=128, bits=4)
    for bad in (0, 9, True, 2.0):
        with pytest.raises(ValueError, match="^bits: must be an integer from 1 to 8"):
            base.replace(bits=bad)
    data = dict(ModelConfig.create(encoder="minilm", head="linear", in_dim=384, dim=128).to_dict(), bits=2)
    with pytest.raises(InputError) as err:
        ModelConfig.from_dict(data, file="qcompress.json")
    assert err.value.field == "bits" and "\n" not in str(err.value)
    assert base.replace(bits=8).bits == 8 and ModelConfig.create(encoder="minilm", in_dim=384,
                                                                 similarity="fidelity", bits=1).bits == 1


def test_set_codec_checks_the_model(tiny_encoder):
    model = build_model(tiny_encoder, head="quantum", dim=8, device="cpu")
    with pytest.raises(ValueError, match="does not fit"):
        model.set_codec(AngleCodes.uniform(dim=4, bits=2))
    model.set_codec(AngleCodes.uniform(dim=8, bits=2))
    assert model.config.bits == 2
    model.set_codec(None)
    assert model.config.bits is None and model.codec is None
    cosine = build_model(tiny_encoder, head="linear", dim=8, device="cpu")
    with pytest.raises(ValueError, match="outputs vectors"):
        cosine.set_codec(AngleCodes.uniform(dim=8, bits=2))


# -- the command line -----------------------------------------------------------------------------------------------


def test_cli_train_bits_writes_the_codec_and_refuses_what_cannot_be_coded(tiny_encoder, corpus_file, tmp_path):
    common = ["--encoder", tiny_encoder, "--dataset", str(corpus_file), "--batch-size", "16",
              "--cache-dir", str(tmp_path / "c")]
    result = runner.invoke(app, ["train", "--loss", "distill", "--head", "quantum", "--dim", "8", "--bits", "4",
                                 "--max-steps", "3", *common, "-o", str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "m"
    assert (folder / CODES_FILE).is_file() and json.loads((folder / "qcompress.json").read_text())["bits"] == 4
    assert load_model(folder, device="cpu").codec.bytes_per_vector == 4
    bad = runner.invoke(app, ["train", "--loss", "distill", "--head", "linear", "--dim", "8", "--bits", "2",
                              *common, "-o", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "--bits" in bad.stderr and "cosine" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    alone = runner.invoke(app, ["train", "--loss", "distill", "--head", "quantum", "--quantizer", "noise",
                                *common, "-o", str(tmp_path / "y")])
    assert alone.exit_code == 1 and "--quantizer" in alone.stderr and "--bits" in alone.stderr
    wide = runner.invoke(app, ["train", "--head", "quantum", "--bits", "9", "-o", str(tmp_path / "z")])
    assert wide.exit_code == 2 and "'--bits'" in wide.stderr


def test_count_params_gives_the_code_size():
    result = runner.invoke(app, ["count-params", "--in-dim", "384", "--out-dim", "256", "--out-dim", "128",
                                 "--bits", "2", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [(r["code_bytes"], r["float32_bytes"]) for r in rows] == [(64, 1024), (32, 512)]
    table = runner.invoke(app, ["count-params", "--in-dim", "384", "--out-dim", "100", "--bits", "3"])
    assert table.exit_code == 0 and "3-bit code bytes" in table.stdout and "38" in table.stdout
