"""`local`: sliding-window attention, query i sees keys with |i - j| <= window.

Causal: 0 <= i - j <= window. Each query block is computed against the one contiguous key span
its band touches (the exact band masked inside the tile) by the band engine (`core/band.py`; fp32 on
CPU through its fused kernel unless engine="xla"), so time and memory are O(N·window); no L×S
matrix is ever built. Any length works (internal padding, masked).
"""
from __future__ import annotations

import dataclasses
from attn_zoo.attention.core import band
from attn_zoo.attention.core import decode
from attn_zoo.attention.core import masks
from attn_zoo.attention.core import sinks
from attn_zoo.attention.core.options import ENGINE_DOC, ENGINES, option
from attn_zoo.attention.core.registry import register

@dataclasses.dataclass(frozen=True)
class Options:
    window: int = option(128, "keys on each side of a query (causal: before it)", min=0)
    block: int = option(128, "query block of the band engine", min=1)
    engine: str = option("auto", ENGINE_DOC, choices=ENGINES)
    sink: bool = sinks.sink_option()


def _band(window, causal):
    return (0 if causal else -window), window


def attention(params, q, k, v, *, key_mask, causal, rng, window, block, engine, sink,
              segment_ids=None, alibi_slopes=None):
    del rng
    dlo, dhi = _band(window, causal)
    out = band.attention(q, k, v, key_mask, dlo=dlo, dhi=dhi, block=block, engine=engine,
                         return_lse=sink, segments=segment_ids, alibi_slopes=alibi_slopes)
    return sinks.apply(*out, params["sink"]) if sink else out


def pattern(L, S, *, causal, window, **_):
    return masks.band_pattern(L, S, window, causal=causal)


def state_size(L, H, D, *, window, **_):
    """2·H·D·min(window + 1, L): a causal query sees itself and the `window` keys before it."""
    return 2 * H * D * min(window + 1, L)


def _ring(max_length, *, window, **_):
    """Decoding keeps a ring buffer of the window + 1 latest keys."""
    return min(window + 1, max_length)


def _in_window(t, pos, table, *, window, **_):
    return t - pos <= window


DECODER = decode.kv_decoder(_ring, _in_window)

SPEC = register(
    "local", family="pattern", exact=True, supports_causal=True, impl=attention,
    kv_heads="native", segments=True, alibi=True,
    options=Options, pattern_fn=pattern, state_size=state_size, complexity="O(N·w)",
    decode_init_fn=DECODER[0], decode_step_fn=DECODER[1], decode_minimal=True,
    description="Sliding window |i−j| ≤ window, one key span per query block.",
    test_options=({"window": 3, "block": 8}, {"window": 10, "block": 4},
                  {"window": 3, "block": 8, "engine": "xla"}),
    bench_options={"window": 256, "block": 128},
)
