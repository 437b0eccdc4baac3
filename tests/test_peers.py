"""The equal-bytes peers of issue 18 (float16, PCA on raw or normalised embeddings, PQ, OPQ, LSH) and the query
precision of every row (issue 17): sizes, rankings against exact oracles, and each method run by name through the
recipe runner."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import WORDS, make_tiny_bert
from qcompress import recipes
from qcompress.recipes import peers, runner
from qcompress.search import select_topk


def _scores(rep: peers.Representation, queries: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    return rep.score(rep.queries(queries), rep.documents(docs))


def _clustered(n_docs: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Documents and queries made of documents plus small noise: each query's nearest document is its source,
    by a wide margin."""
    g = torch.Generator().manual_seed(seed)
    docs = torch.randn(n_docs, dim, generator=g)
    queries = docs[:20] + 0.01 * torch.randn(20, dim, generator=g)
    return docs, queries


def test_bytes_per_vector_and_query_precision_of_each_method():
    docs = torch.randn(300, 32, generator=torch.Generator().manual_seed(0))
    expected = {("float16", None, None): (64, "float16"), ("pca", 8, None): (32, "float32"),
                ("pca-normalised", 8, None): (32, "float32"), ("int8", None, None): (32, "int8"),
                ("int8+rescore", None, None): (32, "float32"), ("binary", None, None): (4, "binary"),
                ("binary+rescore", None, None): (4, "float32")}
    for b in (4, 16):
        expected.update({("pq", None, b): (b, "float32"), ("opq", None, b): (b, "float32"),
                         ("lsh", None, b): (b, "binary")})
    for (method, dim, code_bytes), (size, query) in expected.items():
        rep = peers.representation(method, docs, dim=dim, code_bytes=code_bytes)
        stored = rep.documents(docs)
        assert (rep.bytes_per_vector, rep.query_precision) == (size, query), method
        if method in peers.CODE_METHODS:  # the stored codes are what the row says they are
            assert stored.dtype == np.uint8 and stored.shape == (300, code_bytes)
    assert peers.representation("float16", docs).documents(docs).dtype == torch.float16


def test_code_methods_refuse_what_they_cannot_build():
    docs = torch.randn(300, 30)
    with pytest.raises(ValueError, match="code_bytes=16 sub-vectors: 16 must divide 30"):
        peers.representation("pq", docs, code_bytes=16)
    with pytest.raises(ValueError, match="at least 256 of them, got 100"):
        peers.representation("opq", docs[:100], code_bytes=10)
    with pytest.raises(ValueError, match="code_bytes > 0"):
        peers.representation("lsh", docs)


def test_float16_ranks_as_float32_on_well_separated_data():
    docs, queries = _clustered(200, 24)
    s32 = _scores(peers.representation("float32", docs), queries, docs)
    s16 = _scores(peers.representation("float16", docs), queries, docs)
    assert torch.equal(select_topk(s16, 10)[1], select_topk(s32, 10)[1])
    assert torch.equal(s16.argmax(1), torch.arange(20))


@pytest.mark.parametrize("method", ["pq", "opq"])
def test_product_quantization_with_a_byte_per_dimension_ranks_near_float(method):
    """M = dims: one 256-centroid quantizer per dimension, so reconstructions are close and the ranking is the
    float ranking up to near-ties."""
    docs, queries = _clustered(400, 8)
    exact = _scores(peers.representation("float32", docs), queries, docs)
    coded = _scores(peers.representation(method, docs, code_bytes=8), queries, docs)
    assert torch.equal(coded.argmax(1), torch.arange(20))
    top = select_topk(exact, 10)[1]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top.tolist(), select_topk(coded, 10)[1].tolist())])
    assert overlap >= 0.9
    assert np.corrcoef(exact.flatten().numpy(), coded.flatten().numpy())[0, 1] > 0.99
    # Far fewer bytes lose some of that: the comparison has teeth.
    coarse = _scores(peers.representation(method, docs, code_bytes=1), queries, docs)
    assert np.corrcoef(exact.flatten().numpy(), coarse.flatten().numpy())[0, 1] < 0.99


@pytest.mark.parametrize("code_bytes", [2, 16, 64])
def test_lsh_scores_are_minus_the_hamming_distance_of_random_hyperplane_signs(code_bytes):
    """Oracle: faiss's seeded rotation for the same sizes, applied by hand; bits compared one by one."""
    g = torch.Generator().manual_seed(1)
    docs, queries = torch.randn(60, 24, generator=g), torch.randn(7, 24, generator=g)
    rep = peers.representation("lsh", docs, code_bytes=code_bytes)
    nbits = 8 * code_bytes
    index = faiss.IndexLSH(24, nbits, True, False)  # kept alive: its rotation is read in place
    planes = faiss.vector_to_array(index.rrot.A).reshape(nbits, 24)

    def signs(x: torch.Tensor) -> np.ndarray:
        return F.normalize(x, dim=-1).numpy() @ planes.T > 0

    oracle = -(signs(queries)[:, None, :] != signs(docs)[None, :, :]).sum(-1)
    assert torch.equal(_scores(rep, queries, docs), torch.from_numpy(oracle).float())


def test_pca_variants_differ_only_by_normalising_before_the_fit():
    g = torch.Generator().manual_seed(2)
    docs = torch.randn(100, 12, generator=g) * torch.linspace(0.5, 3, 100)[:, None]  # norms that differ
    raw, unit = peers.representation("pca", docs, dim=12), peers.representation("pca-normalised", docs, dim=12)
    # At full dimension PCA is a rotation of the centred vectors: cosine of (x - mean) for raw inputs.
    centred = docs - docs.mean(0)
    assert torch.allclose(_scores(raw, docs[:5], docs), F.normalize(centred[:5], dim=-1) @
                          F.normalize(centred, dim=-1).T, atol=1e-5)
    unit_docs = F.normalize(docs, dim=-1)
    unit_centred = unit_docs - unit_docs.mean(0)
    assert torch.allclose(_scores(unit, docs[:5], docs), F.normalize(unit_centred[:5], dim=-1) @
                          F.normalize(unit_centred, dim=-1).T, atol=1e-5)


def test_uint8_angles_with_a_uint8_query_score_both_through_the_codes():
    from qcompress.quantization import dequantize_angles, quantize_angles
    from qcompress.quantum import pairwise_log_fidelity

    theta = torch.rand(30, 16, generator=torch.Generator().manual_seed(3)) * torch.pi
    both = peers.representation("uint8 angles+uint8 query", theta)
    float_query = peers.representation("uint8 angles", theta)
    assert (both.bytes_per_vector, both.query_precision, float_query.query_precision) == (16, "uint8", "float32")
    rounded = dequantize_angles(quantize_angles(theta)).float()
    assert torch.equal(_scores(both, theta[:4], theta), pairwise_log_fidelity(rounded[:4], rounded))
    assert not torch.equal(_scores(float_query, theta[:4], theta), _scores(both, theta[:4], theta))


# -- by name through the recipe runner --------------------------------------------------------------------------------

RECIPE = """
name = "newpeers"
[profiles.offline]
encoder = "{encoder}"
max_length = 16
seeds = [1]
pairs = [["BFEC d=16 int8 (float32 query)", "BFEC d=16 int8 (int8 query)"]]
train = {{ dataset = "{folder}", split = "train", negatives = 1, batch_size = 4, epochs = 1, head_lr = 1e-3 }}
evaluate = [{{ name = "t", dataset = "{folder}", split = "test", protocol = "full", top_k = 50 }}]
[[profiles.offline.runs]]
kind = "encoder"
similarity = "fidelity"
storage = ["uint8", "uint8+uint8 query"]
label = "angles"
[[profiles.offline.runs]]
kind = "peer"
method = "float16"
label = "float16"
[[profiles.offline.runs]]
kind = "peer"
method = ["pca", "pca-normalised"]
dim = 8
label = "{{method}} d={{dim}}"
[[profiles.offline.runs]]
kind = "peer"
method = ["pq", "opq", "lsh"]
bytes = 16
label = "{{method}} {{bytes}} B"
[[profiles.offline.runs]]
variant = "BFEC"
dim = 16
storage = ["int8", "int8+rescore"]
label = "BFEC d={{dim}}"
"""


@pytest.fixture(scope="module")
def beir_300(tmp_path_factory) -> Path:
    """A BEIR folder with 300 documents (enough to train 256 PQ centroids) and 4 queries (2 train, 2 test)."""
    folder = tmp_path_factory.mktemp("beir-300")
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(WORDS, size=6)) for _ in range(300)]
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(docs)))
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": docs[7 * i][:20]}) + "\n" for i in range(4)))
    (folder / "qrels").mkdir()
    for split, qs in (("train", (0, 1)), ("test", (2, 3))):
        lines = ["query-id\tcorpus-id\tscore"] + [f"q{q}\td{7 * q}\t1" for q in qs]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_each_new_method_runs_by_name_in_the_recipe_runner(beir_300, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "git_state", lambda: ("0000000", False))
    encoder = make_tiny_bert(tmp_path / "bert", hidden=32, positions=64)
    toml = tmp_path / "newpeers.toml"
    toml.write_text(RECIPE.format(encoder=encoder, folder=beir_300))
    recipe = recipes.load_recipe(toml)
    cfg = recipes.profile_config(recipe, "offline")
    recipes.run_recipe(recipe, "offline", cfg, tmp_path / "out", log=lambda m: None)
    recipes.aggregate(recipe, "offline", cfg, tmp_path / "out")
    rows = {r["label"]: r for r in json.loads((tmp_path / "out/newpeers/offline/summary.json").read_text())}
    expected = {"float16": 64, "pca d=8": 32, "pca-normalised d=8": 32, "pq 16 B": 16, "opq 16 B": 16,
                "lsh 16 B": 16, "BFEC d=16 int8 (int8 query)": 16, "BFEC d=16 int8 (float32 query)": 16,
                "angles uint8": 32, "angles uint8 (uint8 query)": 32}
    assert {label: rows[label]["bytes_per_vector"] for label in expected} == expected
    results = [json.loads(p.read_text()) for p in (tmp_path / "out/newpeers/offline/results").glob("*.json")]
    precision = {row["label"]: row["query_precision"] for result in results for row in result["rows"]}
    assert precision["BFEC d=16 int8 (int8 query)"] == "int8" and precision["lsh 16 B"] == "binary"
    assert precision["BFEC d=16 int8 (float32 query)"] == precision["pq 16 B"] == precision["angles uint8"] \
        == "float32"
    assert precision["angles uint8 (uint8 query)"] == "uint8"
