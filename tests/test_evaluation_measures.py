"""ir_measures names computed by pytrec_eval (checked against pytrec_eval directly), and the scipy paired tests
with Holm's correction that `qcompress evaluate` reports (checked against exhaustive enumeration)."""

import itertools
import math
import random

import numpy as np
import pytest
import pytrec_eval

from qcompress.errors import InputError
from qcompress.evaluation import (
    cut_run, evaluate_run, holm, measure_names, measure_run, paired_randomization_test, scipy_paired_test,
)


def random_case(seed: int):
    rng = random.Random(seed)
    qrels = {f"q{i}": {f"d{j}": rng.choice([0, 0, 1, 2, 3]) for j in rng.sample(range(300), 40)} for i in range(25)}
    run = {f"q{i}": {f"d{j}": float(rng.randint(0, 50)) for j in rng.sample(range(300), 150)} for i in range(23)}
    return run, qrels  # q23, q24 are judged but not in the run: 0 on every measure


@pytest.mark.parametrize("level", [1, 2])
def test_measures_equal_pytrec_eval_directly(level):
    run, qrels = random_case(level)
    mean, per_query = measure_run(run, qrels, ["nDCG@10", "RR@10", "R@100", "AP", "P@5"], relevance_level=level)
    names = measure_names(["nDCG@10", "RR@10", "R@100", "AP", "P@5"], relevance_level=level)
    direct = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recall_100", "map", "P_5"},
                                            relevance_level=level).evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}, relevance_level=level).evaluate(cut_run(run, 10))
    for q in qrels:
        expected = [direct.get(q, {}).get(k, 0.0) for k in ("ndcg_cut_10",)] + [rr.get(q, {}).get("recip_rank", 0.0)]
        expected += [direct.get(q, {}).get(k, 0.0) for k in ("recall_100", "map", "P_5")]
        assert [per_query[q][n] for n in names] == pytest.approx(expected, abs=1e-12), q
    assert per_query["q24"] == {n: 0.0 for n in names}
    assert mean[names[0]] == pytest.approx(sum(v[names[0]] for v in per_query.values()) / 25)
    # The older keys (training logs, recipes) give the same numbers.
    old_mean, _ = evaluate_run(run, qrels, level)
    assert [old_mean[k] for k in ("ndcg_cut_10", "recip_rank_10", "recall_100", "map")] == pytest.approx(
        [mean[n] for n in names[:4]], abs=1e-12)


def test_measure_names_say_which_relevance_level_counts():
    assert measure_names(["nDCG@10", "RR@10", "R@1000", "AP", "AP(rel=1)", "P(rel=3)@5"], relevance_level=2) == [
        "nDCG@10", "RR(rel=2)@10", "R(rel=2)@1000", "AP(rel=2)", "AP", "P(rel=3)@5"]
    assert measure_names(["AP(rel=2)"], relevance_level=1) == ["AP(rel=2)"]
    for bad in ("ndcg_cut_10", "nDCG@ten", "Judged(rel=2)@10", "nDCG(foo=1)@10"):
        with pytest.raises(InputError, match='field "metric"'):
            measure_names([bad])


def exhaustive_sign_flip_p(a, b) -> float:
    d = np.asarray(a) - np.asarray(b)
    observed = abs(d.mean())
    means = [abs((np.asarray(signs) * d).mean()) for signs in itertools.product((1, -1), repeat=len(d))]
    return sum(m >= observed - 1e-12 for m in means) / len(means)


def test_scipy_paired_test_is_the_exact_sign_flip_test_for_few_queries():
    rng = np.random.default_rng(3)
    a, b = rng.random(10).tolist(), rng.random(10).tolist()  # 2^10 = 1024 <= 10,000 permutations: exact
    result = scipy_paired_test(a, b)
    assert result.randomization_p == pytest.approx(exhaustive_sign_flip_p(a, b))
    assert result.difference == pytest.approx(np.mean(a) - np.mean(b))
    from scipy import stats

    assert result.t_p == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_scipy_paired_test_samples_reproducibly_for_many_queries():
    rng = np.random.default_rng(4)
    a = rng.random(200)
    b = a - 0.05 + 0.1 * rng.random(200)
    first, second = (scipy_paired_test(a.tolist(), b.tolist(), permutations=2000, seed=7) for _ in range(2))
    assert first == second and 0 < first.randomization_p <= 1
    assert scipy_paired_test([0.5] * 5, [0.5] * 5).randomization_p == 1.0
    assert math.isnan(scipy_paired_test([], []).randomization_p)


def test_holm_is_step_down_bonferroni():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2, 0.5]) == pytest.approx([0.4, 0.5])
    assert holm([0.9, 0.8]) == [1.0, 1.0]
    assert holm([0.02]) == [0.02] and holm([]) == []
    adjusted = holm([0.04, float("nan")])
    assert adjusted[0] == 0.04 and math.isnan(adjusted[1])


def test_the_recipes_randomization_test_keeps_its_published_values():
    """The recipes' tables are built with paired_randomization_test (numpy, seeded): unchanged."""
    a = [0.5, 0.7, 0.9, 0.6, 0.3, 0.8, 0.4, 0.55, 0.65, 0.75, 0.2, 0.1]
    b = [0.4, 0.5, 0.6, 0.6, 0.35, 0.7, 0.45, 0.5, 0.6, 0.7, 0.25, 0.05]
    assert paired_randomization_test(a, b, n=10_000, seed=0) == 0.07989201079892011  # as before issue 15
