"""The seed-aware test (qcompress.evaluation.seed_stats): what it reduces to, and that it holds its level when
training seeds vary, where a paired test over seed-averaged queries does not."""

import math

import numpy as np
import pytest
from scipy.stats import ttest_rel

from qcompress.evaluation.seed_stats import holm, seed_aware_test, seed_variance


def test_two_deterministic_methods_give_the_paired_t_test():
    rng = np.random.default_rng(1)
    a, b = rng.random((1, 30)), rng.random((1, 30))
    test = seed_aware_test(a, b)
    expected = ttest_rel(a[0], b[0])
    assert test.p == pytest.approx(expected.pvalue, rel=1e-9) and test.t == pytest.approx(expected.statistic)
    assert test.df == pytest.approx(29) and test.seeds == (1, 1)


def test_the_interval_is_the_paired_t_interval_for_deterministic_methods_and_agrees_with_p():
    rng = np.random.default_rng(3)
    a, b = rng.random((1, 30)), rng.random((1, 30))
    low, high = seed_aware_test(a, b).interval(0.9)
    expected = ttest_rel(a[0], b[0]).confidence_interval(0.9)
    assert (low, high) == (pytest.approx(expected.low), pytest.approx(expected.high))
    # With seeds: the 95% interval holds the difference and excludes 0 exactly when p < 0.05.
    queries = rng.normal(0.5, 0.2, 60)
    for spread in (0.0, 0.02, 0.05):
        x = queries + 0.02 + rng.normal(0, spread, (3, 1)) + rng.normal(0, 0.05, (3, 60))
        test = seed_aware_test(x, queries[None, :])
        low, high = test.interval()
        assert low < test.difference < high and (test.p < 0.05) == (not low <= 0 <= high)
    assert seed_aware_test([[0.5, 0.5]], [[0.5, 0.5]]).interval() == (0.0, 0.0)
    with pytest.raises(ValueError, match="level"):
        test.interval(95)


def test_seed_variance_recovers_the_seed_component():
    rng = np.random.default_rng(2)
    y = rng.normal(0, 0.3, (1, 2000)) + rng.normal(0, 0.1, (8, 1)) + rng.normal(0, 0.05, (8, 2000))
    sigma_u, *_ = seed_variance(y)
    assert 0.1**2 / 4 < sigma_u < 0.1**2 * 4  # 8 seeds: the right order of magnitude
    assert seed_variance(y[:1])[0] == 0.0  # one run: no seed component


def _rejection_rates(reps: int = 400) -> tuple[float, float]:
    """Under H0 (equal means) with a seed effect: how often each test rejects at 0.05."""
    rng = np.random.default_rng(3)
    averaged = aware = 0
    for _ in range(reps):
        queries = rng.normal(0.5, 0.2, 50)
        a = queries + rng.normal(0, 0.03, (3, 1)) + rng.normal(0, 0.05, (3, 50))
        b = queries + rng.normal(0, 0.03, (3, 1)) + rng.normal(0, 0.05, (3, 50))
        averaged += ttest_rel(a.mean(0), b.mean(0)).pvalue < 0.05
        aware += seed_aware_test(a, b).p < 0.05
    return averaged / reps, aware / reps


def test_the_seed_aware_test_holds_its_level_where_the_averaged_one_does_not():
    averaged, aware = _rejection_rates()
    assert averaged > 0.3  # seed effects are invisible to a test over seed-averaged queries
    assert aware <= 0.08  # nominal 0.05, up to Monte-Carlo noise (and the test is conservative)


def test_a_real_difference_is_found():
    rng = np.random.default_rng(4)
    queries = rng.normal(0.5, 0.2, 100)
    a = queries + 0.05 + rng.normal(0, 0.005, (5, 1)) + rng.normal(0, 0.05, (5, 100))
    assert seed_aware_test(a, queries[None, :]).p < 1e-3


def test_holm_matches_the_step_down_rule():
    p = [0.001, 0.02, 0.04, 0.5]
    # sorted p times (m - rank), made monotone, capped at 1
    assert holm(p) == pytest.approx([0.004, 0.06, 0.08, 0.5])
    assert holm([None, 0.2]) == [None, 0.2]
    assert math.isnan(holm([math.nan])[0])


def test_degrees_of_freedom_never_fall_below_the_seed_parts_own():
    # Seed means that differ a little more than their noise: Satterthwaite's df of MS_seed - MS_residual fell to
    # 0.47 here, and the 95% interval of a difference of ~0.01 was [-3.74, +3.76] (the audit's [-72.3, +72.3] kind).
    rng = np.random.default_rng(849)
    a, b = rng.normal(0, 0.2, (3, 30)), np.zeros((1, 30))
    test = seed_aware_test(a, b)
    assert test.df >= 2.0  # 3 seeds: the seed part rests on 2 degrees of freedom
    low, high = test.interval()
    assert high - low < 0.5
    # with a negligible seed part nothing changes: the paired t-test's df (queries - 1)
    assert seed_aware_test(rng.normal(0, 0.2, (1, 30)), b).df == 29.0
