"""`local`: sliding-window attention, query i sees keys with |i - j| <= window.

Causal: 0 <= i - j <= window. Each query block is computed against the one contiguous key span
its band touches (the exact band masked inside the tile) by the band engine (`band.py`; fp32 on
CPU through its fused kernel unless engine="xla"), so time and memory are O(N·window); no L×S
matrix is ever built. Any length works (internal padding, masked).
"""
from __future__ import annotations

from attn_zoo.attention import band
from attn_zoo.attention import masks
from attn_zoo.attention.registry import register

DEFAULTS = dict(window=128, block=128, engine="auto")


def _band(window, causal):
    return (0 if causal else -window), window


def attention(params, q, k, v, *, key_mask, causal, rng, window, block, engine):
    del params, rng
    if window < 0:
        raise ValueError(f"local: window must be >= 0, got {window}")
    dlo, dhi = _band(window, causal)
    return band.attention(q, k, v, key_mask, dlo=dlo, dhi=dhi, block=block, engine=engine)


def pattern(L, S, *, causal, window, **_):
    return masks.band_pattern(L, S, window, causal=causal)


SPEC = register(
    "local", family="pattern", exact=True, supports_causal=True, impl=attention,
    defaults=DEFAULTS, pattern_fn=pattern, complexity="O(N·w)",
    description="Sliding window |i−j| ≤ window, one key span per query block.",
    test_options=({"window": 3, "block": 8}, {"window": 10, "block": 4},
                  {"window": 3, "block": 8, "engine": "xla"}),
    bench_options={"window": 256, "block": 128},
)
