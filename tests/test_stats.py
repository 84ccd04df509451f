"""peftbook.stats: Student's t against known quantiles, and false-positive rates under the null."""
from __future__ import annotations

import random

import pytest

from peftbook import stats

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("df, quantile", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantiles_match_the_tables(df, quantile):
    assert stats.t_quantile(0.975, df) == pytest.approx(quantile, abs=1e-4)
    assert stats.t_cdf(quantile, df) == pytest.approx(0.975, abs=1e-5)  # tables round to 4 decimals
    assert stats.t_cdf(-quantile, df) == pytest.approx(0.025, abs=1e-5)


def test_interval_of_three_seeds_is_wide():
    interval = stats.t_interval([0.80, 0.85, 0.90])
    assert interval.mean == pytest.approx(0.85)
    assert interval.half_width == pytest.approx(4.3027 * 0.05 / 3 ** 0.5, abs=1e-4)
    assert stats.t_interval([0.7]).low is None  # one value: no interval


def test_paired_difference_decides_only_when_the_interval_excludes_zero():
    assert stats.paired([0.80, 0.85, 0.90], [0.70, 0.76, 0.79]).verdict == "higher"
    assert stats.paired([0.70, 0.76, 0.79], [0.80, 0.85, 0.90]).verdict == "lower"
    assert stats.paired([0.80, 0.70, 0.90], [0.75, 0.85, 0.80]).verdict == "cannot tell"
    assert stats.paired([0.9], [0.1]).verdict == "cannot tell"  # one seed says nothing about seeds
    assert stats.paired([0.80, 0.85, 0.90], 0.6).verdict == "higher"  # against one deterministic baseline
    with pytest.raises(ValueError, match="as many values"):
        stats.paired([0.1, 0.2], [0.1])


def test_welch_matches_the_paired_test_direction_on_clear_data():
    assert stats.welch([0.80, 0.85, 0.90], [0.60, 0.62, 0.65]).verdict == "higher"
    assert stats.welch([0.80, 0.60, 0.90], [0.75, 0.62, 0.85]).verdict == "cannot tell"


def test_holm_rejects_stepwise():
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == [True, False, False, False]
    assert stats.holm([0.001, 0.01, 0.02]) == [True, True, True]
    assert stats.holm([]) == []


@pytest.mark.parametrize("test, n", [("paired", 3), ("paired", 5), ("welch", 3), ("welch", 5)])
def test_false_positive_rate_under_the_null_is_at_most_five_percent(test, n):
    """Two methods drawn from one distribution: a verdict other than "cannot tell" is a false positive."""
    rng = random.Random(1234)
    trials, wrong = 4000, 0
    for _ in range(trials):
        a = [rng.gauss(0.8, 0.03) for _ in range(n)]
        b = [rng.gauss(0.8, 0.03) for _ in range(n)]
        wrong += getattr(stats, test)(a, b).verdict != "cannot tell"
    assert wrong / trials <= 0.05 + 3 * (0.05 * 0.95 / trials) ** 0.5  # 5% plus three binomial SE


def test_holm_keeps_the_family_wise_rate_at_five_percent():
    rng = random.Random(99)
    trials, any_wrong = 2000, 0
    for _ in range(trials):
        p_values = [stats.paired([rng.gauss(0, 1) for _ in range(5)], [rng.gauss(0, 1) for _ in range(5)]).p_value
                    for _ in range(6)]
        any_wrong += any(stats.holm(p_values))
    assert any_wrong / trials <= 0.05 + 3 * (0.05 * 0.95 / trials) ** 0.5


def test_the_tests_have_power_when_there_is_a_difference():
    rng = random.Random(7)
    found = sum(stats.paired([rng.gauss(0.85, 0.02) for _ in range(5)], [rng.gauss(0.75, 0.02) for _ in range(5)])
                .verdict == "higher" for _ in range(200))
    assert found >= 190


def test_scoring_interval_is_the_wilson_interval():
    low, high = stats.scoring_interval(0.8, 300)
    assert (low, high) == pytest.approx((0.7511, 0.8413), abs=1e-4)
    with pytest.raises(ValueError, match="n=0"):
        stats.scoring_interval(0.5, 0)
