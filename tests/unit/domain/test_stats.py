"""Wilson intervals against published values (cross-checked with scipy's binomtest)."""

from __future__ import annotations

import pytest

from service.domain.stats import accuracy_interval, wilson_interval


@pytest.mark.parametrize(
    ("successes", "n", "lo", "hi"),
    [
        (0, 10, 0.0, 0.2775328),
        (5, 10, 0.2365931, 0.7634069),
        (10, 10, 0.7224672, 1.0),
        (81, 263, 0.2552885, 0.3662096),
        (95, 100, 0.8882495, 0.9784563),
        (1, 1000, 0.0001765, 0.0056426),
    ],
)
def test_known_values(successes: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(successes, n)
    assert got == pytest.approx((lo, hi), abs=1e-6)


def test_interval_narrows_with_more_samples_and_contains_the_estimate() -> None:
    widths = []
    for n in (10, 100, 1000, 10000):
        lo, hi = wilson_interval(3 * n // 10, n)
        assert lo < 0.3 < hi
        widths.append(hi - lo)
    assert widths == sorted(widths, reverse=True)


def test_wider_for_higher_confidence() -> None:
    lo95, hi95 = wilson_interval(30, 100)
    lo99, hi99 = wilson_interval(30, 100, z=2.575829)
    assert lo99 < lo95 and hi99 > hi95


def test_no_samples_means_no_knowledge() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("successes", "n"), [(-1, 10), (11, 10), (0, -1)])
def test_impossible_counts_are_refused(successes: int, n: int) -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(successes, n)


def test_accuracy_interval_rounds_the_fraction_to_a_count() -> None:
    assert accuracy_interval(0.3 + 1e-12, 200) == wilson_interval(60, 200)
    assert accuracy_interval(1.0, 50) == wilson_interval(50, 50)
