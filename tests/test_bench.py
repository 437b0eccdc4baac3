"""qcompress.bench's library: the chunked top-k against a brute-force oracle, leaving a query's own document out,
the fit / evaluated split and its overlap check, the budgets' splits, the bytes every method stores, recall."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qcompress.bench.data import Documents, check_disjoint, pseudo_query_set, split_documents
from qcompress.bench.measures import interval, recall_at
from qcompress.bench.methods import METHODS, FitContext, Refusal, Setting, exact_topk, stored_bytes
from qcompress.bench.methods.faiss_codes import POINTS_PER_CENTROID, pq_split
from qcompress.bench.methods.head import head_splits
from qcompress.bench.methods.pca_scalar import splits
from qcompress.bench.methods.rabitq import rabitq_dims
from qcompress.bench.run import BenchConfig, plan_runs
from qcompress.bench.results import ResultStore
from qcompress.bench.topk import chunked_topk, leave_out
from qcompress.defaults import BENCH_METHODS, PSEUDO_QUERY_KINDS
from qcompress.errors import InputError
from qcompress.recipes.peers_rabitq import code_size
from qcompress.search import select_topk
from qcompress.training.distill import PSEUDO_QUERIES


def _brute(scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """The oracle: each row's scores sorted by (score desc, index asc), its own document removed, first k."""
    out = []
    for row, values in enumerate(scores.tolist()):
        order = sorted(range(len(values)), key=lambda j: (-values[j], j))
        if exclude is not None:
            order = [j for j in order if j != int(exclude[row])]
        out.append(order[:k])
    return torch.tensor(out)


@pytest.mark.parametrize("chunk_rows,k", [(1, 3), (4, 5), (7, 1), (50, 10), (3, 30)])
def test_chunked_topk_is_the_brute_force_top_k_ties_to_the_lower_index(chunk_rows, k):
    g = torch.Generator().manual_seed(chunk_rows * 31 + k)
    scores = torch.randint(0, 4, (6, 30), generator=g).float()  # many ties
    values, indices = chunked_topk(lambda s, e: scores[:, s:e], 30, k, chunk_rows=chunk_rows)
    assert torch.equal(indices, _brute(scores, k))
    assert torch.equal(values, scores.gather(1, indices))


def test_leave_out_gives_the_top_k_of_the_other_documents():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (8, 12), generator=g).float()
    exclude = torch.arange(8)
    for k in (1, 4, 11):
        values, indices = select_topk(scores, k + 1)
        assert torch.equal(leave_out(values, indices, exclude, k)[1], _brute(scores, k, exclude))


def test_exact_topk_leaves_each_pseudo_querys_own_document_out():
    docs = torch.randn(40, 8, generator=torch.Generator().manual_seed(1))
    found = exact_topk(docs[:10], docs, 5, exclude=torch.arange(10))
    assert not (found == torch.arange(10)[:, None]).any()
    cosine = F.normalize(docs[:10], dim=-1) @ F.normalize(docs, dim=-1).T
    assert torch.equal(found, _brute(cosine, 5, torch.arange(10)))
    assert torch.equal(exact_topk(docs[:10], docs, 5)[:, 0], torch.arange(10))  # without exclusion: itself first


def _context(n: int) -> FitContext:
    return FitContext([f"d{i}" for i in range(n)], ["text"] * n)


@pytest.fixture(scope="module")
def embeddings():
    """Fit and evaluated 'embeddings' with a shared mean and decaying variances, like an encoder's outputs."""
    g = torch.Generator().manual_seed(7)
    scale = torch.linspace(2.0, 0.2, 64)
    mean = torch.randn(64, generator=g)
    fit = mean + torch.randn(800, 64, generator=g) * scale
    docs = mean + torch.randn(300, 64, generator=g) * scale
    return fit, docs


def test_every_method_stores_the_bytes_it_claims_and_never_returns_a_left_out_document(embeddings):
    fit, docs = embeddings
    exclude = torch.arange(20)
    config = BenchConfig(budgets=(8, 16, 24, 32), methods=tuple(m for m in METHODS if m != "head"), seeds=(3,))
    planned, _ = plan_runs(config, 64, len(fit))
    families = set()
    for item in planned:
        fitted = METHODS[item.setting.family].fit(item.setting, fit, item.seed, _context(len(fit)))
        stored = fitted.encode(docs)
        size = stored_bytes(stored, len(docs))
        if item.setting.fixed_size:
            expected = {"float32": 256, "float16": 128, "int8": 64, "binary": 8}[item.setting.family]
            assert size == expected, item.setting.label
        elif item.setting.family == "rabitq":
            assert size == code_size(item.setting.param("dims"), item.setting.param("bits")) <= min(item.budgets)
        else:
            assert size == min(item.budgets), item.setting.label  # exactly the budget it was chosen for
        assert fitted.resident_bytes(stored) == size * len(docs)  # the search holds the stored codes only
        found = fitted.search(docs[:20], stored, 10, exclude=exclude)
        assert found.shape == (20, 10) and not (found == exclude[:, None]).any(), item.setting.label
        assert all(len(set(row)) == 10 for row in found.tolist())
        families.add(item.setting.family)
    assert families == set(METHODS) - {"head"}


def test_float32_recall_against_the_truth_is_exactly_one(embeddings):
    fit, docs = embeddings
    method = METHODS["float32"]
    fitted = method.fit(method.fixed(64)[0], fit, None, None)
    exclude = torch.arange(50)
    found = fitted.search(docs[:50], fitted.encode(docs), 100, exclude)
    truth = exact_topk(docs[:50], docs, 100, exclude)
    for k in (10, 100):
        assert recall_at(found, truth, k).tolist() == [1.0] * 50


def test_recall_counts_the_overlap_of_the_two_top_k():
    truth = torch.tensor([[0, 1, 2, 3, 4]])
    assert recall_at(torch.tensor([[4, 3, 9, 8, 7]]), truth, 5).tolist() == [0.4]
    assert recall_at(torch.tensor([[1, 0, 9, 8, 7]]), truth, 2).tolist() == [1.0]
    assert recall_at(torch.tensor([[1, 0]]), torch.tensor([[0, 1]]), 10).tolist() == [1.0]  # k capped by the docs


def test_interval_is_the_t_interval_for_one_run_and_widens_with_seed_spread():
    rng = np.random.default_rng(0)
    one = rng.uniform(0.5, 1.0, 200)
    mean, low, high = interval([one])
    half = 1.9720 * one.std(ddof=1) / np.sqrt(200)  # t(199) at 97.5%
    assert mean == pytest.approx(one.mean()) and high - mean == pytest.approx(half, rel=1e-3)
    spread = np.stack([one + 0.05, one - 0.05, one + 0.08])
    assert interval(spread)[2] - interval(spread)[1] > 2 * half
    assert interval([[1.0] * 10]) == (1.0, 1.0, 1.0)


def test_pca_scalar_splits_are_every_dims_times_bits_of_the_budget():
    for budget, dim in itertools.product((1, 3, 16, 32, 48, 64, 100, 128), (8, 64, 384)):
        got = splits(budget, dim)
        expected = [(d, b) for b in range(1, 9) for d in range(1, dim + 1) if d * b == 8 * budget]
        assert sorted(got) == sorted(expected)
        assert all(d * b == 8 * budget and 1 <= b <= 8 and d <= dim for d, b in got)
    assert splits(64, 384) == [(256, 2), (128, 4), (64, 8)]


def test_pq_takes_the_most_bits_the_fit_documents_support_and_refuses_otherwise():
    assert pq_split(16, 384, 10_240) == (16, 8)  # 40 points for each of 256 centroids
    assert pq_split(16, 384, 10_239) == (32, 4)
    assert pq_split(16, 384, 639) == (64, 2)
    assert pq_split(128, 384, 699) is None  # 128 x 8 bits needs 10,240 documents; 256 x 4 does not divide 384
    refusal = METHODS["pq"].settings(128, 384, 699)[0]
    assert isinstance(refusal, Refusal) and "128 x 8 bits needs 10,240 fit documents" in refusal.reason
    for budget, n in itertools.product((4, 16, 48, 128), (100, 700, 20_000)):
        split = pq_split(budget, 384, n)
        if split is not None:
            m, nbits = split
            assert m * nbits == 8 * budget and 384 % m == 0 and POINTS_PER_CENTROID * 2**nbits <= n


def test_rabitq_takes_the_most_dimensions_whose_code_fits():
    for budget, bits in itertools.product((10, 16, 32, 48, 64, 128), (1, 2, 4)):
        dims = rabitq_dims(budget, bits, 384)
        if dims is None:
            assert code_size(1, bits) > budget
        else:
            assert code_size(dims, bits) <= budget and (dims == 384 or code_size(dims + 1, bits) > budget)
    assert rabitq_dims(16, 1, 384) == 64 and rabitq_dims(64, 1, 384) == 384


def test_head_splits_follow_the_registered_codecs():
    # every split has qubits * bits = 8 * budget, at a registered width, between MIN_QUBITS and the input's size
    assert head_splits(16, 384) == [(64, 2), (128, 1)] and head_splits(128, 384) == [(128, 8), (256, 4)]
    assert head_splits(48, 384) == [(96, 4), (128, 3), (192, 2)]  # 384 x 1 would be as wide as the input
    # a small input (the tiny test encoders): heads from half its size
    assert head_splits(64, 32) == [] and head_splits(2, 32) == [(16, 1)] and head_splits(4, 32) == [(16, 2)]
    assert isinstance(METHODS["head"].settings(64, 32, 100)[0], Refusal)
    assert head_splits(16, 384, min_qubits=16) == [(16, 8), (32, 4), (64, 2), (128, 1)]


def test_the_plan_runs_randomised_methods_per_seed_and_shares_settings_across_budgets():
    config = BenchConfig(budgets=(64, 128), methods=("float32", "rabitq", "pca-scalar"), seeds=(1, 2))
    planned, refusals = plan_runs(config, 384, 1000)
    labels = [(p.setting.label, p.seed) for p in planned]
    assert len(labels) == len(set(labels))
    assert ("float32", None) in labels and ("pca-scalar dims=128 bits=4", None) in labels
    shared = [p for p in planned if p.setting.label == "rabitq dims=384 bits=1"]  # 56 B: reached by both budgets
    assert [p.seed for p in shared] == [1, 2] and shared[0].budgets == (64, 128)
    assert not refusals
    assert tuple(METHODS) == BENCH_METHODS  # the command line's list (qcompress.defaults, free of torch)
    assert PSEUDO_QUERY_KINDS == PSEUDO_QUERIES


def test_the_split_is_seeded_disjoint_and_keeps_equal_texts_together():
    texts = [f"text {i % 40}" for i in range(100)]  # 40 distinct texts, most of them repeated
    docs = Documents([f"d{i}" for i in range(100)], texts)
    fit, evaluated = split_documents(docs, 0.5, seed=3)
    assert set(fit.texts).isdisjoint(evaluated.texts) and len(set(fit.texts)) == 20
    assert sorted(fit.ids + evaluated.ids) == sorted(docs.ids)
    assert split_documents(docs, 0.5, seed=3) == (fit, evaluated)
    assert split_documents(docs, 0.5, seed=4) != (fit, evaluated)
    check_disjoint(fit, evaluated)
    with pytest.raises(InputError, match="between 0 and 1"):
        split_documents(docs, 1.0, seed=0)


@pytest.mark.parametrize("fit,message", [
    (Documents(["d1", "x"], ["new text", "other"]), '1 fit document is also evaluated .* "d1" is also an evaluated'),
    (Documents(["x", "y"], ["wing lift", "heat flow"]), '2 fit documents are also evaluated .* "x" has the text of '
                                                        'evaluated document "d2"'),
])
def test_overlapping_fit_and_evaluated_documents_are_refused(fit, message):
    evaluated = Documents(["d1", "d2", "d3"], ["a wing", "wing lift", "heat flow"])
    with pytest.raises(InputError, match=message):
        check_disjoint(fit, evaluated)


def test_pseudo_queries_are_seeded_evaluated_documents_that_know_their_row():
    evaluated = Documents([f"d{i}" for i in range(30)], [f"w{i} " * 20 for i in range(30)])
    queries = pseudo_query_set(evaluated, 10, "documents", seed=0)
    assert len(queries) == 10 and queries.exclude == sorted(queries.exclude)
    assert [evaluated.ids[i] for i in queries.exclude] == queries.ids
    assert queries.texts == [evaluated.texts[i] for i in queries.exclude]
    spans = pseudo_query_set(evaluated, 10, "spans", seed=0)
    assert spans.exclude == queries.exclude
    assert all(4 <= len(t.split()) <= 16 and t.split()[0] in src for t, src in zip(spans.texts, queries.texts))
    assert len(pseudo_query_set(evaluated, 500, "documents", seed=0)) == 30  # all when fewer


def test_the_result_store_keeps_runs_by_key(tmp_path):
    store = ResultStore(tmp_path)
    assert store.put("lsh bits=64", 2, {"key": "a", "x": 1}).name == "lsh_bits=64-seed2.json"
    assert store.get("lsh bits=64", 2, "a") == {"key": "a", "x": 1}
    assert store.get("lsh bits=64", 2, "b") is None and store.get("lsh bits=64", 3, "a") is None
    (tmp_path / "results" / "lsh_bits=64-seed2.json").write_text("{damaged")
    assert store.get("lsh bits=64", 2, "a") is None
    assert ResultStore(None).put("x", None, {}) is None


def test_setting_labels_name_the_family_and_its_parameters():
    assert Setting("pca-scalar", (("dims", 128), ("bits", 2))).label == "pca-scalar dims=128 bits=2"
    assert Setting("float32", fixed_size=True).label == "float32"
