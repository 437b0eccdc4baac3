"""A model folder is a sentence-transformers model; an encoder's own sentence-transformers configuration is honoured.

`SentenceTransformer(folder)` gives the angles qcompress gives (1e-5) and ranks by log-fidelity; an encoder whose
files say CLS pooling, Normalize and prompts is used that way by qcompress (and --pooling/--query-prompt override).
"""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from qcompress import load_model
from qcompress.cli import app
from qcompress.compress import compress
from qcompress.data import Collection
from qcompress.errors import InputError
from qcompress.formats import read_embedding_metadata
from qcompress.model import build_model
from qcompress.quantum import log_fidelity, pairwise_log_fidelity
from qcompress.training import train

SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer

runner = CliRunner()
TEXTS = ["what is a wing", "the boundary layer flow at the wing", "heat", "pressure of the flow on a wing"]
TINY = Collection(
    "tiny",
    corpus={"d1": "the flow on a wing", "d2": "heat transfer in a boundary layer", "d3": "pressure of the flow",
            "d4": "what are the boundary layer effects", "d5": "a wing", "d6": "heat of the wing at pressure"},
    queries={"q1": "wing flow", "q2": "heat transfer", "q3": "boundary layer pressure", "q4": "what is a wing"},
    qrels={"q1": {"d1": 2}, "q2": {"d2": 1}, "q3": {"d4": 3}, "q4": {"d5": 1}}, split="train",
)


def st_model(folder, **kw) -> "SentenceTransformer":
    return SentenceTransformer(str(folder), device="cpu", **kw)


@pytest.fixture(scope="module")
def qbfec(tiny_encoder, tmp_path_factory) -> Path:
    """A QBFEC head trained for a few steps on the tiny BERT, saved by `train`."""
    root = tmp_path_factory.mktemp("qbfec")
    return train({"variant": "QBFEC", "encoder": tiny_encoder, "output": str(root / "qbfec"), "dim": 8,
                  "negatives": 2, "batch_size": 2, "epochs": 2, "max_steps": 3, "max_length": 64,
                  "cache_dir": str(root / "c"),
                  "device": "cpu"}, collection=TINY)


def test_trained_qbfec_loads_in_sentence_transformers_with_the_same_angles_and_log_fidelity(qbfec):
    ours = load_model(qbfec, device="cpu")
    assert ours.config.training["variant"] == "QBFEC" and ours.config.training_result["steps"] == 3
    st = st_model(qbfec, trust_remote_code=True)
    angles = st.encode(TEXTS, convert_to_tensor=True)
    expected = ours.encode(TEXTS, convert_to_tensor=True)
    assert angles.shape == (4, 8)
    torch.testing.assert_close(angles, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(st.encode_query(TEXTS, convert_to_tensor=True),
                               ours.encode(TEXTS, role="query", convert_to_tensor=True),
                               atol=1e-5, rtol=0)
    assert st.similarity_fn_name == "log_fidelity"
    torch.testing.assert_close(st.similarity(angles, angles), pairwise_log_fidelity(angles, angles))
    torch.testing.assert_close(st.similarity_pairwise(angles[:2], angles[2:]), log_fidelity(angles[:2], angles[2:]))
    assert st.similarity(angles[:1], angles)[0].argmax() == 0  # a text is closest to itself
    dimension = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension  # renamed in 5.x
    assert dimension() == 8


@pytest.mark.parametrize("head, similarity", [("none", "cosine"), ("none", "fidelity"), ("linear", "cosine"),
                                              ("linear", "fidelity"), ("quantum", "fidelity")])
def test_every_head_and_similarity_computes_the_same_in_sentence_transformers(tiny_encoder, tmp_path, head,
                                                                             similarity):
    torch.manual_seed(3)
    model = build_model(tiny_encoder, head=head, dim=None if head == "none" else 8, similarity=similarity,
                        max_length=64, normalize=head == "linear", device="cpu")
    model.save(tmp_path / "m")
    st = st_model(tmp_path / "m", trust_remote_code=True)
    got = st.encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(got, model.encode(TEXTS, convert_to_tensor=True), atol=1e-5, rtol=0)
    if similarity == "cosine":
        assert st.similarity_fn_name == "cosine"
        torch.testing.assert_close(st.similarity(got, got), torch.nn.functional.cosine_similarity(
            got[:, None], got[None], dim=-1), atol=1e-6, rtol=0)
    else:
        torch.testing.assert_close(st.similarity(got, got), pairwise_log_fidelity(got, got))


def test_a_folder_with_a_codec_loads_in_sentence_transformers_and_encodes_float_angles(tiny_encoder, tmp_path):
    from qcompress.codes import CODES_FILE, AngleCodes

    torch.manual_seed(3)
    model = build_model(tiny_encoder, head="quantum", dim=8, max_length=64, device="cpu")
    model.set_codec(AngleCodes.fit(model.encode(TEXTS), bits=2))
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / CODES_FILE).is_file()
    got = st_model(tmp_path / "m", trust_remote_code=True).encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(got, model.encode(TEXTS, convert_to_tensor=True), atol=1e-5, rtol=0)  # float angles, not the codes
    assert len(set(got[:, 0].tolist())) == len(TEXTS)


def test_cosine_models_need_no_remote_code_and_angle_models_say_why_they_do(tiny_encoder, tmp_path):
    torch.manual_seed(0)
    build_model(tiny_encoder, head="linear", dim=8, max_length=64).save(tmp_path / "bfec")
    build_model(tiny_encoder, head="quantum", dim=8, max_length=64).save(tmp_path / "qbfec")
    assert st_model(tmp_path / "bfec").encode(TEXTS).shape == (4, 8)  # Transformer, Pooling, Dense: all built in
    with pytest.raises(ValueError, match="trust_remote_code"):
        st_model(tmp_path / "qbfec")
    modules = json.loads((tmp_path / "qbfec" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == [
        "Transformer", "Pooling", "AngleEncoding", "QuantumHeadModule"]
    assert not list((tmp_path / "qbfec").rglob("*.bin"))  # safetensors only


# -- an encoder with its own sentence-transformers configuration -------------------------------------------------


def make_st_encoder(folder: Path, tiny_encoder: str, *, pooling="cls", normalize=True, prompts=None,
                    extra: list | None = None) -> Path:
    """The tiny BERT as a sentence-transformers folder: its pooling, Normalize and prompts."""
    import shutil

    shutil.copytree(tiny_encoder, folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    modules += extra or []
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": prompts if prompts is not None else {"query": "query: ", "document": "passage: "},
         "default_prompt_name": None, "similarity_fn_name": "cosine"}))
    return folder


@pytest.fixture(scope="module")
def cls_encoder(tiny_encoder, tmp_path_factory) -> str:
    return str(make_st_encoder(tmp_path_factory.mktemp("cls") / "encoder", tiny_encoder))


def manual(model, texts, mode: str) -> torch.Tensor:
    """Pooled hidden states of `texts` exactly as given, computed here by hand."""
    batch = model.tokenize(texts)
    model.eval()  # no dropout
    with torch.no_grad():
        hidden = model.encoder(**batch).last_hidden_state
    if mode == "cls":
        return hidden[:, 0]
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


def test_an_encoder_configured_for_cls_pooling_and_a_query_prompt_is_used_that_way(cls_encoder):
    model = build_model(cls_encoder, similarity="cosine", max_length=64, device="cpu")
    c = model.config
    assert (c.pooling, c.normalize, c.query_prompt, c.document_prompt) == ("cls", True, "query: ", "passage: ")
    queries = model.encode(TEXTS, role="query", convert_to_tensor=True)
    torch.testing.assert_close(queries, torch.nn.functional.normalize(
        manual(model, ["query: " + t for t in TEXTS], "cls"), dim=-1), atol=1e-5, rtol=0)
    documents = model.encode(TEXTS, role="document", convert_to_tensor=True)
    torch.testing.assert_close(documents, torch.nn.functional.normalize(
        manual(model, ["passage: " + t for t in TEXTS], "cls"), dim=-1), atol=1e-5, rtol=0)
    # ... as sentence-transformers itself uses the encoder
    st = st_model(cls_encoder)
    torch.testing.assert_close(queries, st.encode_query(TEXTS, convert_to_tensor=True), atol=1e-5, rtol=0)
    # neither mean pooling nor the bare text
    assert not torch.allclose(queries, torch.nn.functional.normalize(manual(model, TEXTS, "cls"), dim=-1), atol=1e-3)
    assert not torch.allclose(queries, torch.nn.functional.normalize(
        manual(model, ["query: " + t for t in TEXTS], "mean"), dim=-1), atol=1e-3)


def test_pooling_prompts_and_normalize_can_be_overridden(cls_encoder):
    model = build_model(cls_encoder, similarity="cosine", max_length=64, pooling="mean", query_prompt="",
                        normalize=False, device="cpu")
    c = model.config
    assert (c.pooling, c.normalize, c.query_prompt, c.document_prompt) == ("mean", False, "", "passage: ")
    torch.testing.assert_close(model.encode(TEXTS, role="query", convert_to_tensor=True),
                               manual(model, TEXTS, "mean"), atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="pooling"):
        build_model(cls_encoder, pooling="weighted", device="cpu")


def test_training_on_a_configured_encoder_records_pooling_and_prompts_everywhere(cls_encoder, tmp_path):
    folder = train({"encoder": cls_encoder, "head": "quantum", "dim": 8, "output": str(tmp_path / "m"),
                    "negatives": 2, "batch_size": 2, "max_steps": 2, "max_length": 64,
                    "cache_dir": str(tmp_path / "c"), "device": "cpu"}, collection=TINY)
    saved = json.loads((folder / "qcompress.json").read_text())
    assert (saved["pooling"], saved["normalize"], saved["query_prompt"], saved["document_prompt"]) == (
        "cls", True, "query: ", "passage: ")
    assert saved["training"]["pooling"] == "cls" and saved["training"]["query_prompt"] == "query: "
    assert json.loads((folder / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"] is True
    st_config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"] == {"query": "query: ", "document": "passage: "}
    model = load_model(folder, device="cpu")
    st = st_model(folder, trust_remote_code=True)
    torch.testing.assert_close(st.encode_query(TEXTS, convert_to_tensor=True),
                               model.encode(TEXTS, role="query", convert_to_tensor=True),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(st.encode_document(TEXTS, convert_to_tensor=True),
                               model.encode(TEXTS, role="document", convert_to_tensor=True), atol=1e-5, rtol=0)
    # the Parquet metadata records them, and the role and prompt of the file's texts
    compress([("q1", "wing flow")], tmp_path / "q.parquet", model, role="query")
    meta = read_embedding_metadata(tmp_path / "q.parquet")
    assert (meta["pooling"], meta["normalize"], meta["role"], meta["prompt"]) == ("cls", True, "query", "query: ")
    assert meta["document_prompt"] == "passage: "


def test_train_options_override_the_encoders_configuration(cls_encoder, tmp_path):
    corpus = tmp_path / "beir"
    (corpus / "qrels").mkdir(parents=True)
    (corpus / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n"
                                                 for k, v in TINY.corpus.items()))
    (corpus / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n"
                                                  for k, v in TINY.queries.items()))
    (corpus / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for q, docs in TINY.qrels.items() for d, g in docs.items()))
    result = runner.invoke(app, [
        "train", "--encoder", cls_encoder, "--head", "linear", "--dim", "8", "-o", str(tmp_path / "m"),
        "--dataset", str(corpus), "--negatives", "2", "--batch-size", "2", "--max-steps", "1", "--max-length", "64",
        "--pooling", "max", "--query-prompt", "", "--document-prompt", "doc: ", "--no-normalize",
        "--cache-dir", str(tmp_path / "c"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "m" / "qcompress.json").read_text())
    assert (saved["pooling"], saved["normalize"], saved["query_prompt"], saved["document_prompt"]) == (
        "max", False, "", "doc: ")
    result = runner.invoke(app, ["train", "--encoder", cls_encoder, "--head", "linear", "-o", str(tmp_path / "x"),
                                 "--dataset", str(corpus), "--pooling", "weighted"])
    assert result.exit_code == 2
    assert "'--pooling': 'weighted' is not one of 'mean', 'cls', 'max', 'lasttoken'" in result.stderr


def test_an_encoder_pipeline_qcompress_cannot_run_is_refused_unless_the_pooling_is_chosen(tiny_encoder, tmp_path):
    dense = [{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]
    folder = make_st_encoder(tmp_path / "dense", tiny_encoder, normalize=False, extra=dense)
    with pytest.raises(InputError, match=r'modules\.json: field "type": .*Dense module'):
        build_model(str(folder), device="cpu")
    assert build_model(str(folder), pooling="mean", device="cpu").config.pooling == "mean"
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "weightedmean"}))
    (folder / "modules.json").write_text(json.dumps(json.loads((folder / "modules.json").read_text())[:2]))
    with pytest.raises(InputError, match=r'1_Pooling/config\.json: field "pooling_mode"'):
        build_model(str(folder), device="cpu")


def test_the_pooled_cache_keeps_prompts_and_pooling_apart(cls_encoder, tmp_path):
    from qcompress.cache import PooledCache, encode

    model = build_model(cls_encoder, similarity="cosine", max_length=64, device="cpu")
    cache = PooledCache(tmp_path, model)
    queries = encode(model, TEXTS, cache=cache, role="query")
    documents = encode(model, TEXTS, cache=cache, role="document")
    assert len(cache) == 2 * len(TEXTS) and not torch.allclose(queries, documents, atol=1e-3)
    torch.testing.assert_close(queries, model.encode(TEXTS, role="query", convert_to_tensor=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(encode(model, TEXTS, cache=cache, role="document"), documents)  # from the cache
    mean = build_model(cls_encoder, similarity="cosine", max_length=64, pooling="mean", device="cpu")
    assert PooledCache(tmp_path, mean).folder != cache.folder  # another pooling: another cache entry
