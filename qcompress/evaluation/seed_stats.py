"""Comparisons whose unit includes the training seed: is a difference between two methods larger than what
retraining with another seed would give?

A paired test over queries of per-query scores averaged over seeds speaks of *these* trained models: the part of
the difference that is common to every query of one training run (a seed that happened to train well) is
invisible to it. Here each method's scores are a (seeds x queries) matrix, modelled as

    y[s, q] = mu + u[s] + v[q] + e[s, q]        u: seed effect, v: query effect (shared by both methods)

and the difference of the two methods' means is tested with a t statistic whose variance has a query part (the
spread of the per-query differences, as in a paired test) plus each method's seed part, sigma_u^2 / seeds,
estimated from the seed means (a two-way ANOVA without replication; negative estimates are set to 0), with
Satterthwaite's degrees of freedom, floored at the seed part's own (seeds - 1; see `_df_floor`). A deterministic
method (one run) has no seed part; two deterministic methods give exactly the paired t-test over queries. Runs of the two methods are treated as independent even when they
share a seed number, which can only overstate the variance (a conservative test).

Example: a method 0.02 better on average, whose 3 training seeds vary by 0.02, against a deterministic one. Over
queries alone (seed means) the difference looks certain; with the seeds as part of the unit it is not:
    >>> import numpy as np
    >>> from scipy.stats import ttest_rel
    >>> rng = np.random.default_rng(0)
    >>> queries = rng.normal(0.5, 0.2, 40)
    >>> a = queries + 0.02 + rng.normal(0, 0.02, (3, 1)) + rng.normal(0, 0.05, (3, 40))   # 3 seeds x 40 queries
    >>> b = queries[None, :]                                                               # one deterministic run
    >>> bool(ttest_rel(a.mean(0), b[0]).pvalue < 1e-6)
    True
    >>> test = seed_aware_test(a, b)
    >>> round(test.difference, 3), test.seeds, round(test.p, 2)
    (0.032, (3, 1), 0.14)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

__all__ = ["SeedAwareTest", "seed_aware_test", "seed_variance", "holm"]


@dataclass(frozen=True)
class SeedAwareTest:
    """mean(a) - mean(b) over seeds and queries, its t statistic, Satterthwaite df and two-sided p-value."""

    difference: float
    t: float
    df: float
    p: float
    seeds: tuple[int, int]
    queries: int
    query_variance: float  # variance of the mean difference coming from queries (and the residual)
    seed_variance: tuple[float, float]  # each method's seed variance component sigma_u^2
    standard_error: float = math.nan  # of `difference`: query part plus each method's seed part

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The `level` confidence interval of `difference` (Satterthwaite's t): what a "no significant difference"
        can and cannot exclude. A zero-variance test gives the difference itself at both ends.

        Example:
            >>> low, high = seed_aware_test([[0.5, 0.7, 0.4, 0.6]], [[0.4, 0.5, 0.4, 0.4]]).interval()
            >>> round(low, 3), round(high, 3)
            (-0.027, 0.277)
        """
        if not 0 < level < 1:
            raise ValueError(f"level must be between 0 and 1, got {level}")
        if not self.standard_error > 0:
            return self.difference, self.difference
        half = float(stats.t.ppf(0.5 + level / 2, self.df)) * self.standard_error
        return self.difference - half, self.difference + half


def seed_variance(y: np.ndarray) -> tuple[float, float, float, float]:
    """(sigma_u^2 estimate, MS_seed, MS_residual, residual df) of a (seeds x queries) matrix; 0s for one seed."""
    seeds, queries = y.shape
    if seeds < 2:
        return 0.0, 0.0, 0.0, 0.0
    seed_means, query_means, grand = y.mean(1), y.mean(0), y.mean()
    ms_seed = queries * float(((seed_means - grand) ** 2).sum()) / (seeds - 1)
    residual = y - seed_means[:, None] - query_means[None, :] + grand
    df_residual = (seeds - 1) * (queries - 1)
    ms_residual = float((residual**2).sum()) / df_residual if df_residual else 0.0
    return max(0.0, (ms_seed - ms_residual) / queries), ms_seed, ms_residual, float(df_residual)


def seed_aware_test(a: np.ndarray, b: np.ndarray) -> SeedAwareTest:
    """Test mean(a) = mean(b) for two (seeds x queries) matrices of per-query scores (same queries, same order)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two methods were scored on different numbers of queries: {a.shape[1]}, {b.shape[1]}")
    queries = a.shape[1]
    d = a.mean(0) - b.mean(0)  # per-query differences of the seed means
    difference = float(d.mean())
    terms: list[tuple[float, float]] = []  # (variance contribution, its degrees of freedom)
    if queries > 1:
        terms.append((float(d.var(ddof=1)) / queries, queries - 1.0))
    seed_parts = []
    for y in (a, b):
        sigma_u, ms_seed, ms_residual, df_residual = seed_variance(y)
        seed_parts.append(sigma_u)
        if sigma_u > 0:  # sigma_u^2 / S = (MS_seed - MS_residual) / (Q S): two mean squares, for Satterthwaite
            scale = 1.0 / (queries * y.shape[0])
            terms += [(scale * ms_seed, y.shape[0] - 1.0), (-scale * ms_residual, df_residual)]
    variance = sum(v for v, _ in terms)
    query_variance = terms[0][0] if queries > 1 else 0.0
    if variance <= 0 or not terms:
        t = 0.0 if difference == 0 else math.copysign(math.inf, difference)
        return SeedAwareTest(difference, t, math.nan, 1.0 if difference == 0 else 0.0, (a.shape[0], b.shape[0]),
                             queries, query_variance, tuple(seed_parts), 0.0)
    df = max(variance**2 / sum(v**2 / dof for v, dof in terms if dof > 0), _df_floor(terms))
    t = difference / math.sqrt(variance)
    p = float(2 * stats.t.sf(abs(t), df))
    return SeedAwareTest(difference, t, df, p, (a.shape[0], b.shape[0]), queries, query_variance, tuple(seed_parts),
                         math.sqrt(variance))


def _df_floor(terms: list[tuple[float, float]]) -> float:
    """The smallest degrees of freedom among the positive variance terms (for a seed part: seeds - 1).

    Satterthwaite's formula with a difference of mean squares (MS_seed - MS_residual) can give df below 1 when the
    seed part dominates and is barely estimable; a t interval with df 0.3 is tens of units wide ([-72.3, +72.3] was
    published once). Every estimate that enters the variance rests on at least this many degrees of freedom, and
    Satterthwaite's df of a sum of positive terms is never below it: the floor restores that bound.
    """
    return min(dof for v, dof in terms if v > 0 and dof > 0)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None entries are skipped and stay None).

    Example:
        >>> holm([0.01, 0.04, None, 0.03])
        [0.03, 0.06, None, 0.06]
    """
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None and not math.isnan(p))
    adjusted: list[float | None] = [None if p is None else math.nan for p in pvalues]
    running, m = 0.0, len(present)
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = round(running, 15)
    return adjusted
