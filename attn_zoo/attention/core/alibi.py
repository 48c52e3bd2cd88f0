"""ALiBi slopes (Press et al. 2022, "Train Short, Test Long"): head h's logits get − m_h·|i − j|.

For n heads a power of 2, m_h = 2^(−8(h+1)/n), a geometric sequence from 2^(−8/n) to 2^(−8).
Otherwise (the paper's rule, as in its reference code): the slopes of the nearest power of two
below n, c = 2^⌊log2 n⌋, followed by every other slope (the even-indexed ones) of 2c heads,
until n slopes are taken. Pass them as `spec.apply(..., alibi_slopes=slopes(H))`.
"""
from __future__ import annotations

import math

import numpy as np


def _power_of_2(n):
    start = 2.0 ** (-8.0 / n)
    return [start ** (h + 1) for h in range(n)]


def slopes(num_heads: int) -> np.ndarray:
    """np.float32 [H]: the ALiBi slope of each head (H = num_heads >= 1)."""
    if not isinstance(num_heads, (int, np.integer)) or isinstance(num_heads, bool) or num_heads < 1:
        raise ValueError(f"alibi.slopes: num_heads must be an integer >= 1, got {num_heads!r}")
    n = int(num_heads)
    c = 2 ** int(math.floor(math.log2(n)))
    out = _power_of_2(c)
    if c < n:
        out += _power_of_2(2 * c)[0::2][: n - c]
    return np.asarray(out, np.float32)
