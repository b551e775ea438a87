"""Sampling noise of accuracies: a robust accuracy measured on n samples is an estimate, not a fact."""

from __future__ import annotations

import math

Z_95 = 1.959964  # two-sided 95% quantile of the standard normal


def wilson_interval(successes: int, n: int, *, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson, 1927); 95% by default.

    Unlike the normal approximation it stays inside [0, 1] and is not of zero width at 0 or n successes,
    which is where robust accuracies often sit.

    Raises:
        ValueError: n is negative or successes is outside [0, n].
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At 0 or n successes one bound is exact, but floating point can leave it a hair off.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def accuracy_interval(accuracy: float, n: int, *, z: float = Z_95) -> tuple[float, float]:
    """The Wilson interval of an accuracy reported as a fraction of n samples (rounded to a count)."""
    return wilson_interval(min(n, max(0, round(accuracy * n))), n, z=z)
