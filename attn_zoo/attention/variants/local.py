"""`local`: sliding-window attention, query i sees keys with |i - j| <= window.

Causal: 0 <= i - j <= window. Each query block is computed against the one contiguous key span
its band touches (the exact band masked inside the tile) by the band engine (`core/band.py`; fp32 on
CPU through its fused kernel unless engine="xla"), so time and memory are O(N·window); no L×S
matrix is ever built. Any length works (internal padding, masked).
"""
from __future__ import annotations

import dataclasses
from attn_zoo.attention.core import band
from attn_zoo.attention.core import masks
from attn_zoo.attention.core.options import ENGINE_DOC, ENGINES, option
from attn_zoo.attention.core.registry import register

@dataclasses.dataclass(frozen=True)
class Options:
    window: int = option(128, "keys on each side of a query (causal: before it)", min=0)
    block: int = option(128, "query block of the band engine", min=1)
    engine: str = option("auto", ENGINE_DOC, choices=ENGINES)


def _band(window, causal):
    return (0 if causal else -window), window


def attention(params, q, k, v, *, key_mask, causal, rng, window, block, engine):
    del params, rng
    dlo, dhi = _band(window, causal)
    return band.attention(q, k, v, key_mask, dlo=dlo, dhi=dhi, block=block, engine=engine)


def pattern(L, S, *, causal, window, **_):
    return masks.band_pattern(L, S, window, causal=causal)


def state_size(L, H, D, *, window, **_):
    """2·H·D·min(window + 1, L): a causal query sees itself and the `window` keys before it."""
    return 2 * H * D * min(window + 1, L)


SPEC = register(
    "local", family="pattern", exact=True, supports_causal=True, impl=attention,
    options=Options, pattern_fn=pattern, state_size=state_size, complexity="O(N·w)",
    description="Sliding window |i−j| ≤ window, one key span per query block.",
    test_options=({"window": 3, "block": 8}, {"window": 10, "block": 4},
                  {"window": 3, "block": 8, "engine": "xla"}),
    bench_options={"window": 256, "block": 128},
)
