"""`qcompress.mteb.QCompressEncoder` under MTEB (issue 28), offline: mteb's own evaluation of a small retrieval task
built here equals qcompress's evaluation of the same ranking (log-fidelity, with the model's query and document
prompts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qcompress.evaluation import measure_run
from qcompress.model import build_model
from qcompress.mteb import QCompressEncoder
from qcompress.similarity import pairwise_scores

mteb = pytest.importorskip("mteb")

DOCS = {f"d{i}": text for i, text in enumerate([
    "the flow on a wing", "heat transfer in a boundary layer", "pressure of the flow", "what are the boundary layer",
    "a wing", "heat of the wing at pressure", "lift and drag", "the layer of heat", "flow at the wing tip",
    "boundary pressure", "drag on the wing", "what is heat"])}
QUERIES = {"q1": "wing flow", "q2": "heat transfer", "q3": "boundary layer pressure"}
QRELS = {"q1": {"d0": 1, "d8": 1}, "q2": {"d1": 1}, "q3": {"d9": 1, "d3": 1}}


def tiny_task():
    """MTEB's offline mock retrieval task, holding this module's corpus, queries and judgements."""
    from datasets import Dataset
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask

    class Tiny(MockRetrievalTask):
        def load_data(self, num_proc=None, **kwargs):
            split = RetrievalSplitData(
                queries=Dataset.from_list([{"id": k, "text": v} for k, v in QUERIES.items()]),
                corpus=Dataset.from_list([{"id": k, "text": v} for k, v in DOCS.items()]),
                relevant_docs=QRELS, top_ranked=None)
            self.dataset = {"default": {"test": split, "val": split}}
            self.data_loaded = True

    return Tiny()


@pytest.fixture(scope="module")
def model(tiny_encoder):
    built = build_model(tiny_encoder, head="quantum", dim=16, max_length=64, query_prompt="query: ",
                        document_prompt="passage: ", device="cpu")
    return built


def test_mteb_evaluates_the_encoder_as_qcompress_ranks(model, monkeypatch):
    encoder = QCompressEncoder(model)
    roles, similarities = [], []
    encode, similarity = model.encode, encoder.similarity
    monkeypatch.setattr(model, "encode", lambda texts, **kw: roles.append(kw.get("role")) or encode(texts, **kw))
    monkeypatch.setattr(encoder, "similarity", lambda a, b: similarities.append(1) or similarity(a, b))
    results = mteb.evaluate(encoder, tasks=[tiny_task()], cache=None, show_progress_bar=False)
    scores = results.task_results[0].scores["test"][0]

    # qcompress's own evaluation: exact log-fidelity ranking of every document, prompts by role, pytrec_eval.
    queries = model.encode(list(QUERIES.values()), role="query", convert_to_tensor=True)
    docs = model.encode(list(DOCS.values()), role="document", convert_to_tensor=True)
    matrix = pairwise_scores(queries, docs, "fidelity")
    run = {q: dict(zip(DOCS, row.tolist())) for q, row in zip(QUERIES, matrix)}
    mean, _ = measure_run(run, QRELS, ["nDCG@10", "RR@10", "R@5"])
    assert scores["ndcg_at_10"] == pytest.approx(mean["nDCG@10"], abs=1e-5)
    assert scores["mrr_at_10"] == pytest.approx(mean["RR@10"], abs=1e-5)
    assert scores["recall_at_5"] == pytest.approx(mean["R@5"], abs=1e-5)
    assert set(roles) == {"query", "document"} and similarities  # prompts by role; ranked by the model's own score


def test_the_encoder_protocol_numpy_out_and_the_model_s_similarity(model):
    encoder = QCompressEncoder(model, batch_size=4)
    batches = [{"text": ["wing flow", "heat"]}, {"text": ["lift"]}]  # what MTEB's DataLoader yields
    got = encoder.encode(batches, task_metadata=None, hf_split="test", hf_subset="default",
                         prompt_type=mteb.types.PromptType.query)
    expected = model.encode(["wing flow", "heat", "lift"], role="query")
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and np.array_equal(got, expected)
    assert np.array_equal(encoder.encode(["lift"], task_name="STS12"), model.encode(["lift"]))  # mteb 1's call
    assert encoder.encode([], task_name="x").shape == (0, 16)
    a, b = torch.from_numpy(got), torch.from_numpy(expected[::-1].copy())
    torch.testing.assert_close(encoder.similarity(got, expected[::-1]), pairwise_scores(a, b, "fidelity"))
    torch.testing.assert_close(encoder.similarity_pairwise(got, expected[::-1]),
                               pairwise_scores(a, b, "fidelity").diagonal())
    meta = encoder.mteb_model_meta
    assert meta.embed_dim == 16 and str(meta.similarity_fn_name) == "custom"
    cosine = QCompressEncoder(build_model(model.config.encoder, similarity="cosine", max_length=64, device="cpu"))
    assert str(cosine.mteb_model_meta.similarity_fn_name) == "cosine"
    vectors = cosine.encode(["wing", "heat"])
    torch.testing.assert_close(cosine.similarity(vectors, vectors), pairwise_scores(
        torch.from_numpy(vectors), torch.from_numpy(vectors), "cosine"))
