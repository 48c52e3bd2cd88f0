"""`strided` (dilated): query i sees keys j with (i − j) mod stride == 0, optionally |i − j| <= span.

Causal: also j <= i. Positions are regrouped so each residue class mod `stride` is contiguous
and folded into the batch (an O(N·D) transpose); within a class the pattern is a dense (or,
with a span, banded) attention of length N/stride, computed in tiles of `block` by the
block-sparse engine. Cost O(N²/stride) (O(N·span/stride) with a span); no L×S array anywhere.
"""
from __future__ import annotations

import numpy as np

from attn_zoo.attention import block_sparse as bs
from attn_zoo.attention import sparse_common
from attn_zoo.attention.registry import register

DEFAULTS = dict(stride=64, span=-1, block=128)


def class_band(stride, span, causal):
    """(dlo, dhi) on a − b for i = a·stride + r, j = b·stride + r; span < 0 means unbounded."""
    reach = bs.BIG if span < 0 else span // stride
    return (0 if causal else -reach), reach


def _check(stride, span):
    if stride < 1:
        raise ValueError(f"strided: stride must be >= 1, got {stride}")
    if span < -1:
        raise ValueError(f"strided: span must be >= 0, or -1 for unbounded, got {span}")


def attention(params, q, k, v, *, key_mask, causal, rng, stride, span, block):
    del params, rng
    _check(stride, span)
    dlo, dhi = class_band(stride, span, causal)
    return sparse_common.residue_attention(q, k, v, key_mask, stride=stride, dlo=dlo, dhi=dhi,
                                           block=block)


def pattern(L, S, *, causal, stride, span, **_):
    _check(stride, span)
    d = np.arange(L)[:, None] - np.arange(S)[None, :]
    mask = d % stride == 0
    if span >= 0:
        mask &= np.abs(d) <= span
    return mask & (d >= 0) if causal else mask


SPEC = register(
    "strided", family="pattern", exact=True, supports_causal=True, impl=attention,
    defaults=DEFAULTS, pattern_fn=pattern, complexity="O(N²/stride)",
    description="Dilated: (i−j) mod stride == 0 (optionally |i−j| ≤ span); residue classes made contiguous.",
    test_options=({"stride": 3, "block": 4}, {"stride": 2, "span": 9, "block": 4}),
    bench_options={"stride": 64, "block": 128},
)
