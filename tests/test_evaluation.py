"""Protocols, metrics and significance tests of qcompress.evaluation, on small hand-computable examples."""

import math
import warnings

import pytest
import torch

from qcompress.data import Collection
from qcompress.errors import InputError
from qcompress.evaluation import (
    METRICS,
    candidates,
    choose_protocol,
    compare,
    cut_run,
    evaluate,
    evaluate_run,
    exact_topk,
    paired_randomization_test,
    paired_t_test,
    paired_test,
    rank,
)
from qcompress.model import ModelSpec

LOG2_3 = math.log2(3)


class TableModel:
    """A stand-in model: each text's vector is looked up in a table; compared by cosine."""

    similarity = "cosine"

    def __init__(self, vectors):
        self.vectors = vectors
        self.encoded = []

    def encode(self, texts, *, role=None, batch_size=64, on_batch=None, convert_to_tensor=False):
        self.encoded.extend(texts)
        if on_batch is not None:
            on_batch(len(texts))
        return torch.tensor([self.vectors[t] for t in texts], dtype=torch.float32).reshape(len(texts), 2)


# q1 is about wings: d4 (unjudged) is the closest, then d3 (grade 1), d1 (grade 2), d2 (grade 0).
# q2 is about heat: d2 (grade 1) is its only judged document and the closest.
VECTORS = {
    "wing?": [1.0, 0.0], "heat?": [0.0, 1.0],
    "wing lift": [0.8, 0.6], "heat flux": [0.0, 1.0], "wing drag": [0.9, 0.1], "wing span": [1.0, 0.0],
}


def hand_collection():
    return Collection(
        name="hand",
        corpus={"d1": "wing lift", "d2": "heat flux", "d3": "wing drag", "d4": "wing span"},
        queries={"q1": "wing?", "q2": "heat?"},
        qrels={"q1": {"d1": 2, "d2": 0, "d3": 1}, "q2": {"d2": 1}},
        split="test",
    )


# NDCG with trec_eval's linear gains. q1 judged: d3, d1, d2 -> (1 + 2/log2 3) / (2 + 1/log2 3).
Q1_JUDGED = (1 + 2 / LOG2_3) / (2 + 1 / LOG2_3)
# q1 full: d4 (unjudged) first, then d3, d1, d2 -> (1/log2 3 + 2/log2 4) / (2 + 1/log2 3).
Q1_FULL = (1 / LOG2_3 + 1.0) / (2 + 1 / LOG2_3)


def test_judged_protocol_reranks_only_judged_documents():
    model = TableModel(VECTORS)
    result = evaluate(model, hand_collection(), "judged")
    assert result.run["q1"].keys() == {"d1", "d2", "d3"}  # d4 is not judged for q1: never ranked
    assert "wing span" not in model.encoded and "wing lift" in model.encoded  # only candidates are encoded
    assert result.per_query["q1"]["ndcg_cut_10"] == pytest.approx(Q1_JUDGED)
    assert result.per_query["q2"]["ndcg_cut_10"] == pytest.approx(1.0)
    assert result.metrics["ndcg_cut_10"] == pytest.approx((Q1_JUDGED + 1.0) / 2)
    assert result.metrics["recip_rank_10"] == pytest.approx((1 / 1 + 1 / 1) / 2)  # level 1: d3 counts
    assert len(result.per_query) == 2 and result.empty_queries == []


def test_full_protocol_ranks_the_whole_corpus():
    result = evaluate(TableModel(VECTORS), hand_collection(), "full", top_k=3)
    assert len(result.run["q1"]) == 3 and "d4" in result.run["q1"]
    # top-3 of q1: d4, d3, d1 (d2 is cut): DCG 1/log2 3 + 2/2
    assert result.per_query["q1"]["ndcg_cut_10"] == pytest.approx(Q1_FULL)
    assert result.per_query["q1"]["recip_rank_10"] == pytest.approx(1 / 2)


def test_rerank_protocol_uses_first_stage_candidates_and_scores_missing_queries_zero():
    first = {"q1": {"d4": 10.0, "d2": 9.0, "d1": 8.0, "d3": 1.0}, "qx": {"d1": 1.0}}
    result = evaluate(TableModel(VECTORS), hand_collection(), "rerank", first_stage=first, top_k=3)
    # q1's top-3 first-stage candidates d4, d2, d1 re-ranked by the model: d4, d1, d2.
    assert list(cut_run(result.run, 3)["q1"]) == ["d4", "d1", "d2"]
    assert result.per_query["q1"]["ndcg_cut_10"] == pytest.approx((2 / LOG2_3) / (2 + 1 / LOG2_3))
    # q2 is missing from the first stage: explicitly 0 and counted, not dropped from the mean.
    assert result.empty_queries == ["q2"]
    assert result.per_query["q2"] == {m: 0.0 for m in METRICS}
    assert result.metrics["ndcg_cut_10"] == pytest.approx(result.per_query["q1"]["ndcg_cut_10"] / 2)
    assert "qx" not in result.run  # unjudged queries of the first stage are ignored


def test_rerank_needs_a_first_stage_and_known_documents():
    # Library errors name the parameter at fault (InputError.field); the CLI words them with its flags.
    with pytest.raises(InputError, match="needs a first-stage run") as err:
        rank(TableModel(VECTORS), hand_collection(), "rerank")
    assert err.value.field == "first_stage"
    with pytest.raises(InputError, match="only used by protocol rerank") as err:
        candidates({"q": {}}, "judged", first_stage={})
    assert err.value.field == "first_stage"
    with pytest.raises(InputError, match="unknown protocol") as err:
        candidates({"q": {}}, "bm25")
    assert err.value.field == "protocol"
    with pytest.raises(ValueError, match=r"1 candidate document\(s\) are not in the corpus of hand \(e.g. 'zz'\)"):
        rank(TableModel(VECTORS), hand_collection(), "rerank", first_stage={"q1": {"zz": 1.0}})


def test_evaluate_run_counts_queries_missing_from_the_run_as_zero():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}, "c": {"d3": 1}}
    mean, per_query = evaluate_run({"a": {"d1": 1.0}, "b": {}}, qrels)
    assert set(per_query) == {"a", "b", "c"}
    assert mean["ndcg_cut_10"] == pytest.approx(1 / 3)
    assert per_query["c"]["map"] == 0.0


def test_relevance_level_applies_to_binary_measures_not_ndcg():
    qrels = {"q": {"a": 1, "b": 3, "c": 0, "d": 2}}
    run = {"q": {"a": 3.0, "c": 2.0, "b": 1.0}}
    level1, _ = evaluate_run(run, qrels, relevance_level=1)
    level2, _ = evaluate_run(run, qrels, relevance_level=2)
    assert level1["ndcg_cut_10"] == level2["ndcg_cut_10"]
    assert level1["recip_rank_10"] == 1.0 and level2["recip_rank_10"] == pytest.approx(1 / 3)
    assert level2["recall_100"] == pytest.approx(1 / 2)  # b retrieved, d not


def test_rr_at_10_only_counts_the_first_ten():
    run = {"q": {f"d{i}": float(100 - i) for i in range(20)}}
    mean, _ = evaluate_run(run, {"q": {"d12": 1}})
    assert mean["recip_rank_10"] == 0.0
    assert mean["recall_100"] == 1.0


def test_cut_run_breaks_ties_like_trec_eval():
    assert list(cut_run({"q": {"a": 1.0, "c": 1.0, "b": 2.0}}, 3)["q"]) == ["b", "c", "a"]


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_run({}, {"q": {"d": 1}}, metrics=["P_5"])


def test_exact_topk_fidelity_and_cosine():
    docs = torch.tensor([[0.0, 0.0], [3.0, 3.0], [0.2, 0.1]])
    scores, idx = exact_topk(torch.tensor([[0.1, 0.1]]), docs, 2, "fidelity")
    assert idx.tolist() == [[2, 0]] and scores[0, 0] >= scores[0, 1]
    scores, idx = exact_topk(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [2.0, 0.1]]), 5, "cosine")
    assert idx.tolist() == [[1, 0]]  # k is capped at the corpus size


def test_randomization_test():
    a = [0.5, 0.7, 0.2, 0.9, 0.4, 0.6, 0.8, 0.3]
    assert paired_randomization_test(a, a) == 1.0
    better = [x + 0.1 for x in a]
    p = paired_randomization_test(better, a, n=2000, seed=1)
    assert p == pytest.approx(1 / 2001 * (1 + 2 * 2000 / 256), abs=0.01)  # 2 of 256 sign patterns are extreme
    assert paired_randomization_test(better, a, n=2000, seed=1) == p  # seeded: reproducible
    assert paired_randomization_test(a, better, n=2000, seed=1) == p  # two-sided: symmetric
    mixed = [0.6, 0.6, 0.3, 0.8, 0.5, 0.5, 0.9, 0.2]
    assert 0.2 < paired_randomization_test(mixed, a) <= 1.0
    with pytest.raises(ValueError):
        paired_randomization_test([1.0], [1.0, 2.0])


def test_paired_t_test_against_closed_forms():
    # n = 2 (1 degree of freedom): Student's t is Cauchy, p = 1 - 2 atan(|t|) / pi. d = [1, 3]: t = 2.
    t, p = paired_t_test([1.0, 3.0], [0.0, 0.0])
    assert t == pytest.approx(2.0) and p == pytest.approx(1 - 2 * math.atan(2.0) / math.pi)
    # 10 degrees of freedom: t = 2.228138852 is the 5% two-sided critical value.
    d = [1.0] * 5 + [-1.0] * 5
    shift = 2.228138852 * (math.sqrt(sum((x - 0) ** 2 for x in d) / 10) / math.sqrt(11))
    t, p = paired_t_test([x + shift for x in d] + [shift], [0.0] * 11)
    assert t == pytest.approx(2.228138852, rel=1e-6) and p == pytest.approx(0.05, abs=1e-6)
    assert paired_t_test([1.0, 2.0], [1.0, 2.0]) == (0.0, 1.0)
    assert math.isnan(paired_t_test([1.0], [0.0])[1])


def test_judged_documents_without_text_are_left_out_but_still_counted_by_ndcg():
    collection = hand_collection()
    collection.qrels["q2"]["d9"] = 1  # judged, but the corpus has no text for it (a passage pool)
    result = evaluate(TableModel(VECTORS), collection, "judged")
    assert "d9" not in result.run["q2"] and result.judged_without_text == 1
    # q2: d2 (grade 1) ranked first; the ideal ranking has two grade-1 documents.
    assert result.per_query["q2"]["ndcg_cut_10"] == pytest.approx(1 / (1 + 1 / LOG2_3))


def test_rerank_defaults_to_the_collections_own_first_stage():
    collection = hand_collection()
    collection.first_stage = {"q1": {"d1": 2.0, "d3": 1.0}, "q2": {"d2": 1.0}}
    result = evaluate(TableModel(VECTORS), collection, "rerank")
    assert list(cut_run(result.run, 5)["q1"]) == ["d3", "d1"] and result.empty_queries == []


def test_choose_protocol_defaults_and_refusals():
    assert choose_protocol("cranfield") == "full" and choose_protocol(None) == "full"
    assert choose_protocol("cranfield", first_stage="bm25.trec") == "rerank"  # a first stage implies rerank
    assert choose_protocol("msmarco-passage/trec-dl-2019/judged") == "judged"
    assert choose_protocol("trec-dl-2019") == "rerank" and choose_protocol("trec-dl-2020", "pool") == "pool"
    assert choose_protocol("cranfield", "rerank") == "rerank"  # the collection may ship its first stage
    for args, kwargs, field in [
        (("cranfield", "bm25"), {}, "protocol"),
        (("cranfield", "pool"), {}, "dataset"),  # pool only stands for a local TREC DL passage pool
        (("cranfield", "judged"), {"first_stage": "bm25.trec"}, "first_stage"),
    ]:
        with pytest.raises(InputError) as err:
            choose_protocol(*args, **kwargs)
        assert err.value.field == field and "--" not in str(err.value)  # no CLI flags in library messages


def test_paired_t_test_is_quiet_when_differences_are_equal_up_to_rounding():
    a = [0.3, 0.7, 0.45, 0.9, 0.11]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t, p = paired_t_test(a, [x - 0.1 for x in a])
    assert t > 1e6 and p < 1e-20


def test_paired_test_difference_is_the_difference_of_the_reported_means():
    qrels = {f"q{i}": {"d1": 1} for i in range(50)}
    # d1, the one relevant document, ranked 1st, 2nd or 3rd by a (AP 1, 1/2, 1/3) and always 3rd by b.
    a = {q: {"d1": (0.9, 0.55, 0.1)[i % 3], "d2": 0.6, "d3": 0.5} for i, q in enumerate(qrels)}
    b = {q: {"d1": 0.1, "d2": 0.6, "d3": 0.5} for q in qrels}
    mean_a, per_a = evaluate_run(a, qrels)
    mean_b, per_b = evaluate_run(b, qrels)
    test = paired_test([per_a[q]["map"] for q in qrels], [per_b[q]["map"] for q in qrels], permutations=100)
    assert test.difference == mean_a["map"] - mean_b["map"]  # bit for bit: same order of summation
    assert test.permutations == 100 and 0 < test.randomization_p <= 1 and test.t_p < 0.05


def test_compare_labels_models_uniquely_and_tests_each_against_the_first(tiny_encoder, tmp_path):
    specs = [ModelSpec(encoder=tiny_encoder, max_length=16), ModelSpec(encoder=tiny_encoder + "/", max_length=16)]
    seen = []
    result = compare(specs, hand_collection(), "judged", permutations=50, cache_dir=tmp_path,
                     progress=lambda what, total: seen.append(what) or (lambda n: None))
    name = tiny_encoder.rstrip("/").split("/")[-1]
    assert [m.label for m in result.models] == [f"{name}:cosine", f"{name}:cosine#2"]
    assert [m.tag for m in result.models] == [f"{name}_cosine", f"{name}_cosine_2"]
    significance = result.significance[f"{name}:cosine#2"]
    assert set(result.significance) == {f"{name}:cosine#2"} and significance.test.t_p == 1.0
    assert significance.randomization_p_holm == significance.test.randomization_p == 1.0  # one test: Holm is raw
    assert result.measures == ["nDCG@10", "RR@10", "R@100", "R@1000", "AP"] and result.metric == "nDCG@10"
    assert result.models[0].bytes_per_vector == {"float32": 4 * 32, "uint8": None, "codes": None, "bits": None}
    assert result.qids == ["q1", "q2"] and result.judged_without_text == 0 and result.notes == []
    assert seen[:2] == [f"{name}:cosine: encoding queries", f"{name}:cosine: encoding documents"]
    assert any(tmp_path.iterdir())  # the pooled outputs were cached


def test_compare_checks_its_arguments_before_loading_a_model():
    never = ModelSpec(model_dir="/no/such/model")
    with pytest.raises(ValueError, match="permutations must be positive"):
        compare([never], hand_collection(), permutations=0)
    with pytest.raises(InputError, match="needs a first-stage run"):
        compare([never], hand_collection(), "rerank")
    with pytest.raises(ValueError, match="specs is empty"):
        compare([], hand_collection())
