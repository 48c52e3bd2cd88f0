"""Student's t intervals over seeds, in plain Python (no scipy).

    t_quantile(0.975, 2)               # 4.3027...
    t_interval([0.5, 0.6, 0.7])        # Interval(mean=0.6, low=0.3516, high=0.8484, half=0.2484, n=3, std=0.1)

The t distribution's CDF for an integer number of degrees of freedom ν has a closed form
(Abramowitz & Stegun 26.7.3-4, a finite sum in θ = atan(t / √ν)); the quantile is found by
bisection on it, exact to ~1e-12 for every ν >= 1.
"""
from __future__ import annotations

import math
import statistics
from typing import NamedTuple


def _two_sided(t, df):
    """A(t | ν) = P(|T| < t) for T ~ Student's t with ν = df (an integer >= 1) degrees of freedom."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2:  # odd: (2/π)(θ + sinθ (cosθ + 2/3 cos³θ + 2·4/(3·5) cos⁵θ + ... up to cos^(ν-2)θ))
        total, term = 0.0, c
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c * c * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + s * total)
    total, term = 0.0, 1.0  # even: sinθ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ... up to cos^(ν-2)θ)
    for k in range(1, df // 2 + 1):
        total += term
        term *= c * c * (2 * k - 1) / (2 * k)
    return s * total


def t_quantile(p, df):
    """The p quantile (0.5 < p < 1) of Student's t with `df` (integer >= 1) degrees of freedom."""
    if int(df) != df or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df}")
    if not 0.5 < p < 1:
        raise ValueError(f"p must lie in (0.5, 1), got {p}")
    target, lo, hi = 2 * p - 1, 0.0, 1.0
    while _two_sided(hi, int(df)) < target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if _two_sided(mid, int(df)) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    return (lo + hi) / 2


class Interval(NamedTuple):
    mean: float | None
    low: float | None   # None when n < 2: one seed gives no interval
    high: float | None
    half: float | None
    n: int
    std: float | None   # sample standard deviation (n - 1); 0.0 for n = 1


def t_interval(xs, level=0.95):
    """Mean and two-sided Student's t interval (mean ± t_{(1+level)/2, n-1} · s / √n) of the
    values in `xs` that are not None."""
    xs = [float(x) for x in xs if x is not None]
    n = len(xs)
    if n == 0:
        return Interval(None, None, None, None, 0, None)
    mean = statistics.fmean(xs)
    if n == 1:
        return Interval(mean, None, None, None, 1, 0.0)
    std = statistics.stdev(xs)
    half = t_quantile((1 + level) / 2, n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, half, n, std)
