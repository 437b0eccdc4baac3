"""A head or a similarity defined outside qcompress plugs in by registration alone (docs/architecture.md's "Where new
things plug in"): built, saved, loaded, encoded, counted, ranked and trained with no other qcompress file changed.

The toy head is a fixed random projection + tanh, compared by cosine; the toy similarity is the dot product.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor, nn

from qcompress.data import Collection
from qcompress.errors import InputError
from qcompress.evaluation import rank
from qcompress.evaluation.ranking import exact_topk
from qcompress.heads import HEAD_REGISTRY, get_head, register_head
from qcompress.heads.base import HeadKind
from qcompress.model import build_model, load_model
from qcompress.model_config import read_config
from qcompress.registry import Registry
from qcompress.similarity import SIMILARITY_REGISTRY, pairwise_scores, register_similarity
from qcompress.similarity.base import VECTORS, Similarity
from qcompress.training import train

TEXTS = ["a wing", "heat flow in a layer", "pressure", "the wing at pressure"]
DOCS = {"d1": "the flow on a wing", "d2": "heat transfer in a boundary layer", "d3": "pressure of the flow",
        "d4": "a wing at high pressure"}
TINY = Collection("tiny", corpus=DOCS, queries={"q1": "wing", "q2": "heat transfer", "q3": "pressure on a wing"},
                  qrels={"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d4": 2}}, split="train")


class FixedProjection(nn.Module):
    """tanh(W x) with W drawn once from a seeded generator and never trained."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(in_dim * 1000 + out_dim)
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim, generator=generator) / in_dim**0.5,
                                   requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x @ self.weight.T)


class FixedTanhHead(HeadKind):
    name = "fixed-tanh"
    output_kinds = (VECTORS,)
    trainable = False

    def build(self, in_dim, out_dim):
        return FixedProjection(in_dim, out_dim)

    def num_parameters(self, in_dim, out_dim):
        return in_dim * out_dim

    def project(self, module, pooled, similarity, mixing):
        return module(pooled)

    def st_modules(self, config, head_state, mixing_state):
        dense = {"in_features": config.in_dim, "out_features": config.dim, "bias": False,
                 "activation_function": "torch.nn.modules.activation.Tanh"}
        return [("sentence_transformers.models.Dense", "Dense", dense, {"linear.weight": head_state["weight"]})]

    def describe(self, config):
        return f"a fixed random projection (tanh, {self.num_parameters(config.in_dim, config.dim):,} parameters)"


class Dot(Similarity):
    name = "dot"
    output_kind = VECTORS
    label = "dot product"
    st_function = "dot"

    def pairwise(self, queries, docs):
        return queries @ docs.T

    def paired(self, a, b):
        return (a * b).sum(-1)

    def topk(self, queries, docs, k):
        # A stable sort of the negated scores: ties go to the lower index, as in every qcompress top-k.
        order = torch.sort(-(queries @ docs.T), dim=1, stable=True).indices[:, :k]
        return torch.gather(queries @ docs.T, 1, order), order


@pytest.fixture
def fixed_tanh():
    register_head(FixedTanhHead)
    yield get_head("fixed-tanh")
    HEAD_REGISTRY.unregister("fixed-tanh")


@pytest.fixture
def dot():
    register_similarity(Dot)
    yield
    SIMILARITY_REGISTRY.unregister("dot")


def test_a_registered_head_builds_saves_loads_encodes_and_counts(fixed_tanh, tiny_encoder, tmp_path):
    model = build_model(tiny_encoder, head="fixed-tanh", dim=8, max_length=64, device="cpu")
    assert (model.similarity, model.output_kind) == ("cosine", "vectors")  # the head kind's default
    encoded = model.encode(TEXTS, convert_to_tensor=True)
    with torch.no_grad():
        pooled = model.eval().pool(TEXTS)  # eval: no dropout, as in encode
    torch.testing.assert_close(encoded, torch.tanh(pooled @ model.head.weight.T), atol=1e-6, rtol=0)
    assert model.head_parameters() == fixed_tanh.num_parameters(32, 8) == 32 * 8

    model.save(tmp_path / "m")
    assert read_config(tmp_path / "m").head == "fixed-tanh"
    assert "a fixed random projection (tanh, 256 parameters)" in (tmp_path / "m" / "README.md").read_text()
    loaded = load_model(tmp_path / "m", device="cpu")
    assert torch.equal(loaded.encode(TEXTS, convert_to_tensor=True), encoded)

    HEAD_REGISTRY.unregister("fixed-tanh")  # a folder whose head nobody registered is refused in one line
    try:
        with pytest.raises(InputError, match="unknown head 'fixed-tanh'; choose one of none, linear, quantum"):
            load_model(tmp_path / "m", device="cpu")
    finally:
        register_head(FixedTanhHead)


def test_a_registered_head_refuses_what_it_cannot_output_and_training_alone(fixed_tanh, tiny_encoder, tmp_path):
    with pytest.raises(ValueError, match="a fixed-tanh head outputs vectors, not the angles fidelity compares"):
        build_model(tiny_encoder, head="fixed-tanh", dim=8, similarity="fidelity", device="cpu")
    with pytest.raises(ValueError, match="nothing to train: head fixed-tanh with a frozen encoder"):
        train({"encoder": tiny_encoder, "head": "fixed-tanh", "dim": 8, "output": str(tmp_path / "t"),
               "device": "cpu"}, collection=TINY)


def test_a_registered_head_loads_in_sentence_transformers(fixed_tanh, tiny_encoder, tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model = build_model(tiny_encoder, head="fixed-tanh", dim=8, max_length=64, device="cpu")
    model.save(tmp_path / "m")
    st = sentence_transformers.SentenceTransformer(str(tmp_path / "m"), device="cpu")
    torch.testing.assert_close(st.encode(TEXTS, convert_to_tensor=True),
                               model.encode(TEXTS, convert_to_tensor=True), atol=1e-5,
                               rtol=0)
    assert st.similarity_fn_name == "cosine"


def test_a_registered_similarity_ranks_trains_and_saves(dot, tiny_encoder, tmp_path):
    model = build_model(tiny_encoder, similarity="dot", max_length=64, device="cpu")
    assert model.output_kind == "vectors"
    queries, docs = model.encode(TEXTS[:2], convert_to_tensor=True), model.encode(TEXTS, convert_to_tensor=True)
    scores, indices = exact_topk(queries, docs, 3, "dot")
    brute = queries @ docs.T
    assert torch.equal(indices, brute.argsort(dim=1, descending=True, stable=True)[:, :3])
    torch.testing.assert_close(pairwise_scores(queries, docs, "dot"), brute)
    assert set(rank(model, TINY, "full", top_k=2)) == set(TINY.queries)

    model.save(tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text()
    assert "32-dimensional vectors, compared by dot product" in card and "| similarity | dot product |" in card
    assert json.loads((tmp_path / "m" / "config_sentence_transformers.json").read_text())["similarity_fn_name"] == "dot"

    trained = train({"encoder": tiny_encoder, "head": "linear", "similarity": "dot", "dim": 8, "negatives": 2,
                     "batch_size": 2, "max_steps": 2, "max_length": 64, "output": str(tmp_path / "t"),
                     "cache_dir": str(tmp_path / "c"), "device": "cpu"}, collection=TINY)
    assert load_model(trained, device="cpu").similarity == "dot"


def test_a_registry_refuses_a_taken_name_and_keeps_its_built_in_kinds():
    kinds = Registry("head", {"none": "qcompress.heads.none:NoHeadKind"})
    with pytest.raises(ValueError, match="a head class needs a non-empty `name`"):
        kinds.register(HeadKind)
    with pytest.raises(ValueError, match="a head named 'none' is already registered"):
        kinds.register(type("Other", (HeadKind,), {"name": "none"}))
    with pytest.raises(ValueError, match="not a head added by register"):
        kinds.unregister("none")
    assert type(kinds.get("none")).__name__ == "NoHeadKind" and kinds.get("none") is kinds.get("none")
