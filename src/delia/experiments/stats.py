"""The cluster bootstrap behind every interval and significance call in `delia report`.

Outcomes are arrays (seeds x keys): one row per training seed of a method, one column per prompt (an example
under one phrasing). A resample draws whole clusters (example ids: all phrasings and all seeds of an example
move together, since they share the example's difficulty) with replacement, and, independently for each
method, its seeds with replacement (a method's seeds are independent trainings). A single-seed method keeps its
one seed. The statistic is the mean over the resampled prompts of (mean over seeds of A) - (mean over seeds
of B), or of A alone. Percentile intervals; seeded, so a report is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile interval and what it rests on."""

    mean: float
    low: float
    high: float
    n_keys: int
    n_clusters: int

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0 (for a difference)."""
        return not math.isnan(self.low) and (self.low > 0 or self.high < 0)


NAN = Interval(math.nan, math.nan, math.nan, 0, 0)


def _seed_weights(rng: np.random.Generator, n_seeds: int, n: int) -> np.ndarray:
    """(n, n_seeds) resampling weights summing to 1 per row (a multinomial draw of the seeds)."""
    if n_seeds == 1:
        return np.ones((n, 1))
    return rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n) / n_seeds


def cluster_bootstrap(a: np.ndarray, clusters: Sequence[object], b: np.ndarray | None = None, n: int = 2000,
                      seed: int = 0, level: float = 0.95) -> Interval:
    """Mean of A (or of A - B, paired by column) with a bootstrap over clusters and seeds.

    Args:
        a: (seeds_a, keys) outcomes of method A; every seed holds every key.
        clusters: the cluster (example id) of each key.
        b: (seeds_b, keys) outcomes of method B on the same keys, or None for A alone.
        n: resamples; seed: numpy seed; level: two-sided coverage.
    Returns:
        Interval(mean, low, high, n_keys, n_clusters); NaNs when there are no keys.
    """
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    k = a.shape[1]
    if k == 0:
        return NAN
    if len(clusters) != k or (b is not None and np.shape(b)[1] != k):
        raise ValueError("cluster_bootstrap: a, b and clusters must have one entry per key")
    _, inv = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    n_cl = int(inv.max()) + 1
    onehot = np.zeros((k, n_cl))
    onehot[np.arange(k), inv] = 1.0
    a_cl = a @ onehot  # (seeds_a, clusters): per-cluster sums for each seed
    size = onehot.sum(0)  # keys per cluster
    diff = a.mean(0)
    if b is not None:
        b = np.atleast_2d(np.asarray(b, dtype=np.float64))
        diff = diff - b.mean(0)
    point = float(diff.mean())
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_cl, np.full(n_cl, 1.0 / n_cl), size=n)  # (n, clusters)
    per = _seed_weights(rng, a.shape[0], n) @ a_cl
    if b is not None:
        per = per - _seed_weights(rng, b.shape[0], n) @ (b @ onehot)
    vals = (counts * per).sum(1) / (counts @ size)
    q = (1 - level) / 2
    return Interval(point, float(np.quantile(vals, q)), float(np.quantile(vals, 1 - q)), k, n_cl)


# two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30 (beyond: a Cornish-Fisher expansion, exact to 3
# decimals); numpy has no t distribution and scipy is not a dependency for one table
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (a two-sided 95% interval's multiplier)."""
    if df < 1:
        raise ValueError(f"t975: df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def seed_interval(diffs: Sequence[float]) -> Interval:
    """Mean of per-seed values (each training seed one observation) with a two-sided 95% Student-t interval over
    the seeds; the interval is NaN with fewer than two seeds. n_keys = n_clusters = the number of seeds."""
    d = np.asarray([x for x in diffs if not math.isnan(x)], dtype=np.float64)
    n = len(d)
    if n == 0:
        return NAN
    mean = float(d.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1, 1)
    half = t975(n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, n)
