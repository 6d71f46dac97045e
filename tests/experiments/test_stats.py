"""The cluster bootstrap: exact on degenerate cases, clusters kept together, seeds resampled."""

from __future__ import annotations

import numpy as np
import pytest

from delia.experiments.stats import cluster_bootstrap


def test_identical_methods_give_an_interval_around_zero():
    rng = np.random.default_rng(1)
    a = (rng.random((3, 200)) < 0.6).astype(float)  # 3 seeds that disagree with each other
    iv = cluster_bootstrap(a, [f"e{k // 4}" for k in range(200)], a.copy())
    assert iv.mean == 0.0 and iv.low < 0 < iv.high and not iv.significant
    assert (iv.n_keys, iv.n_clusters) == (200, 50)


def test_a_constant_lift_of_one_is_exactly_one():
    a, b = np.ones((2, 30)), np.zeros((3, 30))
    iv = cluster_bootstrap(a, [k // 3 for k in range(30)], b)
    assert (iv.mean, iv.low, iv.high) == (1.0, 1.0, 1.0) and iv.significant


def test_whole_clusters_are_resampled():
    """20 examples x 10 phrasings; an example's phrasings all succeed or all fail. Resampling prompts one by one
    would treat them as 200 independent draws; resampling examples keeps the 20 draws there really are."""
    outcome = np.repeat((np.arange(20) % 2).astype(float), 10)[None, :]  # 50% overall
    by_example = cluster_bootstrap(outcome, [k // 10 for k in range(200)])
    by_prompt = cluster_bootstrap(outcome, list(range(200)))  # every prompt its own cluster
    w_ex, w_pr = by_example.high - by_example.low, by_prompt.high - by_prompt.low
    assert by_example.mean == by_prompt.mean == 0.5
    # binomial widths: 2 * 1.96 * sqrt(.25 / 20) = 0.44 vs 2 * 1.96 * sqrt(.25 / 200) = 0.14
    assert w_ex == pytest.approx(0.44, abs=0.06) and w_pr == pytest.approx(0.14, abs=0.03)


def test_seeds_are_resampled():
    """Two seeds that disagree completely: the seed draw alone spans [0, 1]; one seed has no seed spread."""
    a = np.array([[1.0] * 40, [0.0] * 40])
    iv = cluster_bootstrap(a, list(range(40)))
    assert iv.mean == 0.5 and iv.low == 0.0 and iv.high == 1.0
    one = cluster_bootstrap(a[:1], list(range(40)))
    assert (one.mean, one.low, one.high) == (1.0, 1.0, 1.0)


def test_seeded_and_shape_checked():
    a = np.random.default_rng(0).random((2, 50))
    assert cluster_bootstrap(a, list(range(50)), seed=3) == cluster_bootstrap(a, list(range(50)), seed=3)
    with pytest.raises(ValueError, match="one entry per key"):
        cluster_bootstrap(a, list(range(49)))
    assert cluster_bootstrap(np.zeros((1, 0)), []).n_keys == 0
