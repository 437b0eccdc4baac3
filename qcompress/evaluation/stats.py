"""Paired significance tests of two systems' per-query values: permutation tests, a t-test, Holm's correction.

Two comparisons of two systems, each giving a permutation test and a t-test at once:
    scipy_paired_test  what `qcompress evaluate` reports: scipy.stats.permutation_test (paired: the samples'
                       signs flipped, two-sided, on the mean difference) and scipy.stats.ttest_rel
    paired_test        what the recipes report (their published p-values): `paired_randomization_test`, numpy with
                       a seeded PCG64 (reproducible bit for bit), and the same t-test
`holm` adjusts the p-values of several models compared with one (Holm-Bonferroni, step-down).

Example:
    >>> r = paired_test([0.5, 0.7, 0.9, 0.6], [0.4, 0.5, 0.6, 0.6], permutations=1000)
    >>> round(r.difference, 3), round(r.t_p, 3), r.randomization_p > 0.05
    (0.15, 0.103, True)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["paired_randomization_test", "paired_t_test", "paired_test", "PairedTest", "scipy_paired_test", "holm"]


def paired_randomization_test(
    a: Sequence[float], b: Sequence[float], n: int = 10_000, seed: int = 0
) -> float:
    """Two-sided paired randomization (sign-flip permutation) test of mean(a - b) = 0; returns the p-value.

    Each of `n` permutations swaps the two systems' values on a random subset of queries (numpy's PCG64 seeded
    with `seed`, so results are reproducible). p = (1 + #{|mean diff| >= observed}) / (n + 1).

    Example:
        >>> paired_randomization_test([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
        1.0
        >>> paired_randomization_test([1.0] * 12, [0.0] * 12) < 0.001
        True
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or len(a) != len(b):
        raise ValueError(f"paired values must be two sequences of the same length, got {len(a)} and {len(b)}")
    if d.size == 0:
        return math.nan
    observed = abs(d.mean())
    tolerance = 1e-12 * max(1.0, observed)  # identical sums in another order may differ in the last bit
    rng = np.random.default_rng(seed)
    extreme, done, step = 0, 0, max(1, 2_000_000 // d.size)  # bounded memory: step x queries signs at a time
    while done < n:
        m = min(step, n - done)
        signs = rng.integers(0, 2, size=(m, d.size), dtype=np.int8) * 2 - 1
        extreme += int((np.abs(signs @ d) / d.size >= observed - tolerance).sum())
        done += m
    return (extreme + 1) / (n + 1)


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided paired t-test of mean(a - b) = 0: (t statistic, p-value), Student's t with n-1 degrees of freedom.

    Undefined cases are explicit: fewer than two pairs give (nan, nan); identical differences give (0, 1) when
    they are all 0, else (+-inf, 0).

    Example:
        >>> t, p = paired_t_test([1.0, 2.0, 3.0, 4.0], [0.5, 1.0, 2.0, 4.5])
        >>> round(t, 4), round(p, 4)
        (1.4142, 0.2522)
    """
    if len(a) != len(b):
        raise ValueError(f"paired values must have the same length, got {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        return math.nan, math.nan
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        return (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    # scipy.stats takes about a second to import: loaded by the first t-test, so that importing
    # qcompress.evaluation (and so every CLI command) stays quick.
    from scipy import stats

    with warnings.catch_warnings():
        # Differences equal up to rounding make scipy warn about cancellation; the statistic is still the
        # textbook one, and a warning on stderr would break the CLI's clean output.
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        result = stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class PairedTest:
    """Two systems compared query by query: mean(a) - mean(b) and the two-sided p-values of two paired tests."""

    difference: float
    randomization_p: float  # sign-flip permutation test (`paired_randomization_test`)
    t: float  # paired t statistic (nan where undefined)
    t_p: float
    permutations: int
    seed: int


def paired_test(a: Sequence[float], b: Sequence[float], *, permutations: int = 10_000, seed: int = 0) -> PairedTest:
    """Compare per-query values of two systems (same queries, same order): the one significance test of qcompress.

    `difference` sums each system's values in order, as `evaluate_run` does for its means, so it equals the
    difference of the reported means exactly.

    Example:
        >>> r = paired_test([0.5, 0.7, 0.9, 0.6], [0.4, 0.5, 0.6, 0.6])
        >>> round(r.difference, 3), r.randomization_p > 0.05
        (0.15, True)
    """
    t, t_p = paired_t_test(a, b)
    difference = sum(a) / len(a) - sum(b) / len(b) if len(a) else math.nan
    return PairedTest(difference, paired_randomization_test(a, b, n=permutations, seed=seed), t, t_p,
                      permutations, seed)


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def scipy_paired_test(
    a: Sequence[float], b: Sequence[float], *, permutations: int = 10_000, seed: int = 0
) -> PairedTest:
    """Compare per-query values of two systems (same queries, same order) with scipy: a two-sided paired
    permutation test of the mean difference (`scipy.stats.permutation_test`, permutation_type "samples": each
    query's two values swapped or not; exact when 2^n <= `permutations`, else `permutations` random ones from
    a generator seeded with `seed`) and the paired t-test (`paired_t_test`, i.e. `scipy.stats.ttest_rel`).

    Example:
        >>> r = scipy_paired_test([0.5, 0.7, 0.9, 0.6], [0.4, 0.5, 0.6, 0.6])   # 2^4 sign patterns: exact
        >>> round(r.difference, 3), r.randomization_p, round(r.t_p, 3)
        (0.15, 0.25, 0.103)
    """
    if len(a) != len(b):
        raise ValueError(f"paired values must have the same length, got {len(a)} and {len(b)}")
    t, t_p = paired_t_test(a, b)
    if not len(a):
        return PairedTest(math.nan, math.nan, t, t_p, permutations, seed)
    difference = sum(a) / len(a) - sum(b) / len(b)
    from scipy import stats  # about a second to import: loaded by the first test (see paired_t_test)

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    result = stats.permutation_test(
        (x, y), _mean_difference, permutation_type="samples", vectorized=True, n_resamples=permutations,
        alternative="two-sided", batch=max(1, 2_000_000 // len(x)),  # bounded memory: batch x queries at a time
        rng=np.random.default_rng(seed),
    )
    return PairedTest(difference, float(min(1.0, result.pvalue)), t, t_p, permutations, seed)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order: the i-th smallest of m is multiplied by m - i + 1,
    kept at least its predecessor's and at most 1. Undefined (nan) p-values stay nan and do not count in m.

    Example:
        >>> holm([0.01, 0.04, 0.03, float("nan")])
        [0.03, 0.06, 0.06, nan]
    """
    finite = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[i] = running
    return adjusted
