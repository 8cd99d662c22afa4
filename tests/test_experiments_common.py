"""experiments/common.py's Welch test: no p-value (nan) from a single seed, scipy's value otherwise."""
import numpy as np
import pytest

stats = pytest.importorskip("scipy.stats")
from experiments.common import p_text, significance, welch  # noqa: E402


def test_welch_one_seed_is_no_test():
    # one value per group has no spread to test against: old code returned p = 0 ("significant")
    assert np.isnan(welch([0.91], [0.95]))
    assert np.isnan(welch([0.91], [0.95, 0.96]))
    assert p_text(welch([0.91], [0.95])) == "n/a"
    assert significance(welch([0.91], [0.95])) == " (no test: fewer than 2 seeds)"


def test_welch_identical_groups_without_spread():
    assert np.isnan(welch([0.9, 0.9], [0.9, 0.9, 0.9]))


def test_welch_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(90, 1, 5), rng.normal(91, 2, 4)
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert welch(a, b) == pytest.approx(expected, rel=1e-12)
    assert 0 < welch(a, b) < 1
