"""--backend (qcompress.backends): the tiny BERT exported to ONNX / OpenVINO gives torch's angles (float32) or nearly
(int8), each export is made once and kept, the pooled-output cache keeps backends apart, and a missing extra is one
line."""

import json
import sys

import numpy as np
import torch
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from qcompress import backends
from qcompress.backends import attach_backend, export_folder
from qcompress.cache import PooledCache, encoder_key, pool_texts, weights_digest
from qcompress.cli import app
from qcompress.model import ModelSpec, build_model
from qcompress.formats import read_embedding_metadata

runner = CliRunner()

DOCS = [{"_id": f"d{i}", "text": text} for i, text in enumerate([
    "the flow on a wing", "heat transfer in a boundary layer", "pressure of the flow at mach 3",
    "what are the boundary layer effects on a wing at high speed and low pressure", "a wing"])]
# float32 exports compute what torch computes, in another order of operations: measured 5e-7 rad on MiniLM's
# angles; 1e-4 rad leaves room for other CPUs' kernels and would still catch a wrong input or pooling.
FLOAT_TOLERANCE = 1e-4
# int8 changes the angles: measured up to 0.04 rad on MiniLM's (Cranfield); the tiny random BERT is checked loosely
# against torch and strictly against being identical (the int8 model must really be another model).
INT8_TOLERANCE = 0.3


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """One export folder for the module: each backend is exported once and reused by the tests."""
    return tmp_path_factory.mktemp("exports")


def compressed(corpus, encoder, out, *args) -> np.ndarray:
    result = runner.invoke(app, ["compress", str(corpus), "--encoder", encoder, "--head", "none", "--similarity",
                                 "fidelity", "-o", str(out), "--no-cache", *args])
    assert result.exit_code == 0, result.output
    return np.array(pq.read_table(out).column("angles").to_pylist(), dtype=np.float32)


@pytest.mark.parametrize("backend,module", [("onnx", "onnxruntime"), ("openvino", "openvino")])
def test_a_float32_backend_gives_torchs_angles(backend, module, corpus, tiny_encoder, exports, tmp_path):
    pytest.importorskip(module)
    torch_angles = compressed(corpus, tiny_encoder, tmp_path / "torch.parquet")
    angles = compressed(corpus, tiny_encoder, tmp_path / f"{backend}.parquet", "--backend", backend,
                        "--cache-dir", str(exports))
    assert np.abs(angles - torch_angles).max() < FLOAT_TOLERANCE
    meta = read_embedding_metadata(tmp_path / f"{backend}.parquet")
    assert meta["backend"] == backend


def test_onnx_int8_gives_nearly_torchs_angles(corpus, tiny_encoder, exports, tmp_path):
    pytest.importorskip("onnxruntime")
    torch_angles = compressed(corpus, tiny_encoder, tmp_path / "torch.parquet")
    angles = compressed(corpus, tiny_encoder, tmp_path / "int8.parquet", "--backend", "onnx-int8",
                        "--cache-dir", str(exports))
    difference = np.abs(angles - torch_angles).max()
    assert 0 < difference < INT8_TOLERANCE, difference


def test_openvino_int8_is_calibrated_on_cranfield(tiny_encoder, tmp_path, monkeypatch):
    pytest.importorskip("nncf")
    monkeypatch.setattr(backends, "CALIBRATION_TEXTS", 8)  # the tiny model needs no 300 texts to be quantized
    model = build_model(tiny_encoder, similarity="fidelity", max_length=64, device="cpu")
    texts = [d["text"] for d in DOCS]
    expected = model.encode(texts)
    attach_backend(model, "openvino-int8", tmp_path, notify=lambda line: None)
    info = json.loads((model.runtime.folder / "export.json").read_text())
    assert info["backend"] == "openvino-int8" and info["source"] == "openvino" and "Cranfield" in info["calibration"]
    assert 0 < np.abs(model.encode(texts) - expected).max() < INT8_TOLERANCE


def test_the_export_is_made_once_then_loaded(tiny_encoder, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    calls = []
    real = backends._EXPORTS["onnx"]
    monkeypatch.setitem(backends._EXPORTS, "onnx", lambda *args: calls.append(1) or real(*args))
    lines = []
    model = build_model(tiny_encoder, similarity="fidelity", max_length=64, device="cpu")
    attach_backend(model, "onnx", tmp_path, notify=lines.append)
    file = export_folder(model, "onnx", tmp_path) / "model.onnx"
    made = file.stat().st_mtime_ns
    assert calls == [1] and model.runtime.folder == file.parent and "exporting the encoder" in lines[0]

    again = build_model(tiny_encoder, similarity="fidelity", max_length=64, device="cpu")
    attach_backend(again, "onnx", tmp_path, notify=lines.append)
    assert calls == [1] and file.stat().st_mtime_ns == made and len(lines) == 2  # loaded, not exported again
    assert again.backend == "onnx" and again.runtime.folder == file.parent


def test_each_backend_has_its_own_pooled_cache_and_torch_keeps_its_key(tiny_encoder, exports, tmp_path):
    pytest.importorskip("onnxruntime")
    model = build_model(tiny_encoder, similarity="fidelity", max_length=64, device="cpu")
    tok = model.tokenizer
    earlier = weights_digest(model.encoder, type(tok).__name__, len(tok), getattr(tok, "do_lower_case", None),
                             model.max_length, model.config.pooling)
    keys = {"torch": encoder_key(model)}
    for backend in ("onnx", "onnx-int8"):
        attach_backend(model, backend, exports, notify=lambda line: None)
        keys[backend] = encoder_key(model)
    assert keys["torch"] == earlier  # the pooled outputs cached by earlier versions stay valid
    assert len(set(keys.values())) == 3

    texts = [d["text"] for d in DOCS]
    cache = PooledCache(tmp_path / "cache", model)  # the onnx-int8 model's folder
    assert model.backend == "onnx-int8" and model.backend_variant == f"onnx-int8-{backends.onnx_int8_config()}"
    pooled = pool_texts(model, texts, cache=cache)
    attach_backend(model, "torch")
    assert len(PooledCache(tmp_path / "cache", model)) == 0 and len(cache) == len(texts)
    assert not np.array_equal(pool_texts(model, texts).numpy(), pooled.numpy())  # int8 outputs are not torch's


def test_a_missing_extra_is_one_line_before_the_input_is_read(corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails, as when not installed
    result = runner.invoke(app, ["compress", str(tmp_path / "no-such-file.jsonl"), "-o", str(tmp_path / "o.parquet"),
                                 "--backend", "onnx-int8"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == ("qcompress: error: --backend onnx-int8 needs onnxruntime, which "
                                                      "is not installed: pip install 'qcompress-embeddings[onnx]'")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError, match=r"pip install 'qcompress-embeddings\[openvino\]'"):
        ModelSpec(encoder="minilm", backend="openvino").load()


def test_an_exported_backend_runs_on_the_cpu(corpus, tmp_path):
    result = runner.invoke(app, ["compress", str(corpus), "-o", str(tmp_path / "o.parquet"), "--backend", "onnx",
                                 "--device", "mps"])
    assert result.exit_code == 2
    assert "--backend onnx runs on the CPU" in result.stderr


@pytest.mark.parametrize("command", ["compress", "evaluate", "search"])
def test_backend_is_an_option_of(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0 and "--backend" in result.stdout
    assert "onnx-int8" in result.stdout and "openvino-int8" in result.stdout


def test_search_encodes_the_query_through_the_backend(corpus, tiny_encoder, exports, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "docs.parquet"
    compressed(corpus, tiny_encoder, out)  # the corpus by torch, the query by ONNX Runtime: the same model
    args = ["search", "the flow on a wing", "--corpus", str(out), "--encoder", tiny_encoder, "--head", "none",
            "--similarity", "fidelity", "--json", "--top-k", "2"]
    by_torch = runner.invoke(app, args)
    by_onnx = runner.invoke(app, [*args, "--backend", "onnx"], env={"QCOMPRESS_CACHE": str(exports)})
    assert by_torch.exit_code == 0 and by_onnx.exit_code == 0, by_onnx.output
    torch_hits, onnx_hits = ([json.loads(line) for line in r.stdout.splitlines()] for r in (by_torch, by_onnx))
    assert [h["id"] for h in onnx_hits] == [h["id"] for h in torch_hits]
    assert [h["score"] for h in onnx_hits] == pytest.approx([h["score"] for h in torch_hits], abs=1e-3)


def test_int8_settings_follow_the_cpu_and_name_their_folder_and_cache(tiny_encoder, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    model = build_model(tiny_encoder, similarity="fidelity", max_length=64, device="cpu")
    seen = {}
    for config in ("avx2", "avx512_vnni"):  # uint8 weights, then int8 weights
        monkeypatch.setattr(backends, "onnx_int8_config", lambda config=config: config)
        attach_backend(model, "onnx-int8", tmp_path, notify=lambda line: None)
        info = json.loads((model.runtime.folder / "export.json").read_text())
        seen[config] = (model.runtime.folder.name, encoder_key(model), info["cpu"])
    (folder_a, key_a, cpu_a), (folder_b, key_b, cpu_b) = seen["avx2"], seen["avx512_vnni"]
    assert (folder_a, cpu_a, folder_b, cpu_b) == ("onnx-int8-avx2", "avx2", "onnx-int8-avx512_vnni", "avx512_vnni")
    assert key_a != key_b  # two int8 models: two pooled-output caches


def test_evaluate_ranks_a_model_folder_the_same_through_onnx(tiny_encoder, exports, tmp_path):
    pytest.importorskip("onnxruntime")
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    queries = {"q1": "wing flow", "q2": "heat transfer", "q3": "boundary layer pressure"}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td1\t1\nq3\td3\t1\n")
    folder = tmp_path / "qbec"
    build_model(tiny_encoder, head="quantum", dim=16, max_length=64).save(folder)
    args = ["evaluate", "--model", str(folder), "--dataset", str(root), "--json", "--per-query", "--cache-dir",
            str(exports)]
    by_torch, by_onnx = runner.invoke(app, args), runner.invoke(app, [*args, "--backend", "onnx"])
    assert by_torch.exit_code == 0 and by_onnx.exit_code == 0, by_onnx.output
    torch_run, onnx_run = json.loads(by_torch.stdout), json.loads(by_onnx.stdout)
    assert onnx_run["models"][0]["model"]["head"] == "quantum"
    assert onnx_run["per_query"] == torch_run["per_query"]  # float32 through ONNX Runtime: the same ranking


def test_a_folder_without_export_json_is_made_again(tiny_encoder, tmp_path):
    pytest.importorskip("onnxruntime")
    model = build_model(tiny_encoder, similarity="fidelity", max_length=64, device="cpu")
    stale = export_folder(model, "onnx", tmp_path)
    stale.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"half an export")  # an interrupted copy by hand, say
    attach_backend(model, "onnx", tmp_path, notify=lambda line: None)
    assert (stale / "export.json").is_file() and model.encode(["a wing"]).shape == (1, model.dim)


# bfloat16 keeps 8 bits of mantissa: the tiny random BERT's angles move by up to ~1e-2 rad; 0.1 would still catch a
# wrong input or pooling, and 0 < difference shows the products really ran in bfloat16.
BF16_TOLERANCE = 0.1


def test_torch_bf16_needs_no_extra_and_gives_nearly_torchs_angles(corpus, tiny_encoder, tmp_path, monkeypatch):
    for module in ("onnx", "onnxruntime", "openvino", "nncf"):
        monkeypatch.setitem(sys.modules, module, None)  # none of the optional runtimes is needed
    torch_angles = compressed(corpus, tiny_encoder, tmp_path / "torch.parquet")
    angles = compressed(corpus, tiny_encoder, tmp_path / "bf16.parquet", "--backend", "torch-bf16", "--device", "cpu")
    difference = np.abs(angles - torch_angles).max()
    assert 0 < difference < BF16_TOLERANCE, difference
    assert read_embedding_metadata(tmp_path / "bf16.parquet")["backend"] == "torch-bf16"


def test_torch_bf16_keeps_the_model_trainable_and_says_when_the_cpu_emulates_it(tiny_encoder, monkeypatch):
    model = build_model(tiny_encoder, similarity="fidelity", max_length=64, device="cpu")
    lines = []
    monkeypatch.setattr(backends, "bf16_native", lambda: False)
    attach_backend(model, "torch-bf16", notify=lines.append)
    assert model.backend == model.backend_variant == "torch-bf16" and model.runtime.folder is None
    assert len(lines) == 1 and "no bfloat16 instructions" in lines[0] and "slower than --backend torch" in lines[0]
    assert all(p.dtype == torch.float32 for p in model.encoder.parameters())  # autocast: the weights stay float32
    assert model.encode(["a wing"]).dtype == np.float32
    monkeypatch.setattr(backends, "bf16_native", lambda: True)
    attach_backend(model, "torch-bf16", notify=lines.append)
    assert len(lines) == 1


def test_openvino_bf16_runs_the_openvino_export_and_names_the_precision_it_got(tiny_encoder, exports, monkeypatch):
    pytest.importorskip("openvino")
    model = build_model(tiny_encoder, similarity="fidelity", max_length=64, device="cpu")
    texts = [d["text"] for d in DOCS]
    expected = model.encode(texts)
    lines = []
    attach_backend(model, "openvino-bf16", exports, notify=lines.append)
    assert model.backend == "openvino-bf16" and model.runtime.folder == export_folder(model, "openvino", exports)
    difference = np.abs(model.encode(texts) - expected).max()
    if backends.bf16_native():  # OpenVINO computes in bfloat16 here: its own pooled-output cache
        assert model.backend_variant == "openvino-bf16" and 0 < difference < BF16_TOLERANCE
    else:  # float32, as --backend openvino: the same outputs, the same cache
        assert model.backend_variant == "openvino" and difference < FLOAT_TOLERANCE

    real = backends._load_runtime
    monkeypatch.setattr(backends, "_load_runtime", lambda *args, **kw: (real(*args)[0], "f32"))  # a CPU without it
    lines.clear()
    attach_backend(model, "openvino-bf16", exports, notify=lines.append)
    assert model.backend_variant == "openvino" and lines == [
        "--backend openvino-bf16: this CPU has no bfloat16 instructions (AMX, AVX512_BF16): OpenVINO runs f32 instead"]


def test_the_onnx_export_uses_eager_attention_and_gives_the_encoder_back_as_it_was(tiny_encoder, tmp_path,
                                                                                   monkeypatch):
    pytest.importorskip("onnx")
    model = build_model(tiny_encoder, similarity="fidelity", max_length=64, device="cpu")
    model.encoder.set_attn_implementation("sdpa")
    seen = []
    real = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kw: seen.append(
        model.encoder.config._attn_implementation) or real(*args, **kw))
    attach_backend(model, "onnx", tmp_path, notify=lambda line: None)
    assert seen == ["eager"]  # plain MatMul/Softmax nodes: what ONNX Runtime's int8 kernels run fast
    assert model.encoder.config._attn_implementation == "sdpa"
    assert "eager attention" in json.loads((model.runtime.folder / "export.json").read_text())["exporter"]


def test_a_new_way_of_exporting_starts_a_new_pooled_cache(tiny_encoder, exports):
    pytest.importorskip("onnxruntime")
    model = build_model(tiny_encoder, similarity="fidelity", max_length=64, device="cpu")
    attach_backend(model, "onnx-int8", exports, notify=lambda line: None)
    assert model.runtime.export_version == backends.EXPORT_VERSION
    key = encoder_key(model)
    model.runtime.export_version -= 1  # the same folder name, made the way an older version made it
    assert encoder_key(model) != key  # its int8 outputs are not reused for the new export's
